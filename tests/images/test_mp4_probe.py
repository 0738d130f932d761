"""images/mp4_probe.py: which MP4 codec this OpenCV writes, probed in a child process."""
import os
import threading
import time


def test_the_mp4_probe_leaves_this_process_stderr_alone(capfd):
    """Another thread's messages while the probe runs all reach stderr (the probe once pointed the whole
    process's file descriptor 2 at the null device), and the probe's own complaints do not."""
    from repaint_cli.images import frames

    probing, written = threading.Event(), []

    def other_thread():
        while probing.is_set():
            os.write(2, b"other thread\n")
            written.append(1)
            time.sleep(0.001)

    frames.mp4_codec.cache_clear()
    probing.set()
    t = threading.Thread(target=other_thread)
    t.start()
    try:
        codec = frames.mp4_codec()
    finally:
        probing.clear()
        t.join()
        frames.mp4_codec.cache_clear()
    assert codec is None or codec in frames.MP4_CODECS
    err = capfd.readouterr().err
    assert err.splitlines() == ["other thread"] * len(written)
