"""repaint models fetch (issue 34): the real download code against an HTTP server this test starts on
127.0.0.1, never the internet: ranges, a connection dropped mid-file, a wrong size, a wrong hash, a 404,
Google Drive's confirmation page, a mirror, fetching on first use."""
import hashlib
from urllib.parse import urlsplit

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_png
from http_server import use_cards, write_card
from repaint_cli.cli.app import app
from repaint_cli.models import fetch

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def leftovers(w):
    return sorted(p.name for p in w.iterdir() if not p.name.endswith(".yaml"))


def test_fetch_downloads_into_the_weights_folder_checks_keys_and_prints_the_hash(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 0, r.output
    assert (w / "tiny_1000.pt").read_bytes() == data and leftovers(w) == ["tiny_1000.pt"]
    assert r.stdout.strip() == str(w / "tiny_1000.pt")
    assert hashlib.sha256(data).hexdigest() in r.stderr and "keys and shapes" in r.stderr
    r = invoke("models", "fetch", "tiny")  # present: nothing fetched again
    assert r.exit_code == 0 and "present" in r.stderr and len(server.requests) == 1


def test_a_dropped_connection_is_resumed_with_a_range_request(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    server.drop_after["tiny_1000.pt"] = len(data) // 3
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt", hashlib.sha256(data).hexdigest()))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 0, r.output
    assert (w / "tiny_1000.pt").read_bytes() == data
    assert server.requests == [("tiny_1000.pt", None), ("tiny_1000.pt", f"bytes={len(data) // 3}-")]
    assert "resuming" in r.stderr and "matches its card" in r.stderr


def test_a_partial_file_from_an_earlier_run_is_resumed_not_fetched_again(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    (w / ".tiny_1000.pt.part").write_bytes(data[:1000])
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 0, r.output
    assert server.requests == [("tiny_1000.pt", "bytes=1000-")]
    assert (w / "tiny_1000.pt").read_bytes() == data and leftovers(w) == ["tiny_1000.pt"]


def test_a_server_without_ranges_sends_it_all_again(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    server.no_range.add("tiny_1000.pt")
    (w / ".tiny_1000.pt.part").write_bytes(b"x" * 1000)  # not even the right bytes: it must be replaced
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    assert invoke("models", "fetch", "tiny").exit_code == 0
    assert (w / "tiny_1000.pt").read_bytes() == data


def test_a_wrong_size_fails_in_one_line_and_nothing_is_left(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    server.extra_length["tiny_1000.pt"] = 4096  # announces more than it has, every time
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"announces {len(data) + 4096:,} bytes" in errors[0] and "removed" in errors[0]
    assert leftovers(w) == []
    # the connection was taken for dropped once, resumed, and the server had nothing more
    assert server.requests == [("tiny_1000.pt", None), ("tiny_1000.pt", f"bytes={len(data)}-")]


def test_a_connection_that_keeps_dropping_stops_after_a_few_tries_and_keeps_the_part(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    server.drop_after = _AlwaysDrop(100)
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1 and len(server.requests) == fetch.ATTEMPTS
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "rerun to resume" in errors[0]
    assert leftovers(w) == [".tiny_1000.pt.part"]  # hidden: never taken for the checkpoint, resumed by the next run
    assert (w / ".tiny_1000.pt.part").read_bytes() == data[:100 * fetch.ATTEMPTS]
    server.drop_after = {}
    assert invoke("models", "fetch", "tiny").exit_code == 0
    assert server.requests[-1] == ("tiny_1000.pt", f"bytes={100 * fetch.ATTEMPTS}-")
    assert (w / "tiny_1000.pt").read_bytes() == data and leftovers(w) == ["tiny_1000.pt"]


class _AlwaysDrop(dict):
    def __init__(self, n):
        super().__init__()
        self.n = n

    def pop(self, key, default=None):
        return self.n


def test_a_wrong_hash_is_refused_in_one_line_and_removed(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt", "0" * 64))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "differs from its card's" in errors[0] and "removed" in errors[0]
    assert leftovers(w) == []


def test_a_corrupt_file_without_a_recorded_hash_fails_the_strict_check(server, weights, monkeypatch):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data[: len(data) // 2]  # truncated at the source: not a readable checkpoint
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1 and "removed" in r.stderr and leftovers(w) == []
    other = {**hp, "num_channels": hp["num_channels"] * 2}  # a readable checkpoint of another architecture
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, other, f"{server.url}/tiny_1000.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1 and "does not match the architecture" in r.stderr and leftovers(w) == []


def test_a_404_names_the_url(server, weights, monkeypatch):
    w, cards, data, hp = weights
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/gone.pt"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1 and "HTTP 404" in r.stderr and f"{server.url}/gone.pt" in r.stderr
    assert leftovers(w) == []


@pytest.mark.parametrize("page", ["uc", "uc-cookie"])
def test_google_drives_confirmation_page_is_followed(server, weights, monkeypatch, page):
    w, cards, data, hp = weights
    server.files["FILEID"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/{page}?id=FILEID"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 0, r.output
    assert (w / "tiny_1000.pt").read_bytes() == data


def test_drives_quota_page_is_said_plainly(server, weights, monkeypatch):
    w, cards, data, hp = weights
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/quota?id=X"))
    r = invoke("models", "fetch", "tiny")
    assert r.exit_code == 1 and "quota" in r.stderr and "--from" in r.stderr and leftovers(w) == []


def test_drive_links_become_download_urls():
    for link in ("https://drive.google.com/uc?id=1AbC-d_e", "https://drive.google.com/file/d/1AbC-d_e/view",
                 "https://drive.google.com/open?id=1AbC-d_e"):
        assert fetch.direct_url(link) == "https://drive.google.com/uc?export=download&id=1AbC-d_e"
    other = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion.pt"
    assert fetch.direct_url(other) == other


def test_from_a_mirror_or_a_local_file(server, weights, monkeypatch, tmp_path):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, "http://127.0.0.1:9/unreachable.pt"))
    assert invoke("models", "fetch", "tiny", "--from", f"{server.url}/").exit_code == 0
    assert server.requests == [("tiny_1000.pt", None)] and (w / "tiny_1000.pt").read_bytes() == data
    (w / "tiny_1000.pt").unlink()
    local = tmp_path / "copy.pt"
    local.write_bytes(data)
    assert invoke("models", "fetch", "tiny", "--from", local).exit_code == 0
    assert (w / "tiny_1000.pt").read_bytes() == data


def test_first_use_needs_fetch_outside_a_terminal_then_fetches_and_runs(server, weights, monkeypatch, tmp_path):
    w, cards, data, hp = weights
    server.files["tiny_1000.pt"] = data
    use_cards(monkeypatch, w, write_card(cards, hp, f"{server.url}/tiny_1000.pt"))
    write_png(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, (16, 16, 3)))
    args = ["inpaint", tmp_path / "a.png", "--model", "tiny", "--preset", "draft", "--out", tmp_path / "o", "--quiet"]
    r = invoke(*args)  # no terminal here (the test runner's streams): never a silent download
    assert r.exit_code == 2 and "repaint models fetch tiny" in r.stderr and "--fetch" in r.stderr
    assert server.requests == []
    r = invoke(*args, "--fetch")
    assert r.exit_code == 0, r.output
    assert (w / "tiny_1000.pt").is_file() and r.stdout.strip() == str(tmp_path / "o" / "a.png")


def test_the_shipped_cards_name_repaints_download_urls():
    from repaint_cli.models.cards import find_card

    assert find_card("celeba256").urls == ["https://drive.google.com/uc?id=1norNWWGYP3EZ_o05DmoW1ryKuKMmhlCX"]
    assert find_card("places256").urls == ["https://drive.google.com/uc?id=1QEl-btGbzQz6IwkXiFGd49uQNTUtTHsk"]
    inet = find_card("imagenet256")
    assert [t.urls[0].rsplit("/", 1)[1] for t in fetch.targets(inet)] == ["256x256_diffusion.pt",
                                                                        "256x256_classifier.pt"]
    assert all(urlsplit(t.urls[0]).hostname == "openaipublic.blob.core.windows.net" for t in fetch.targets(inet))


def test_fetch_celeba256_from_the_local_server_resumes_and_refuses_a_corrupt_file(server, weights, monkeypatch):
    """The issue's check: the shipped card's model, from a mirror on this machine that cuts the connection once
    and serves bytes that are not the checkpoint: resumed, refused in one line, nothing left in the folder."""
    w, cards, data, hp = weights
    junk = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    server.files["celeba256_250000.pt"] = junk
    server.drop_after["celeba256_250000.pt"] = 1 << 20
    r = invoke("models", "fetch", "celeba256", "--from", f"{server.url}/")
    assert r.exit_code == 1
    assert server.requests == [("celeba256_250000.pt", None), ("celeba256_250000.pt", f"bytes={1 << 20}-")]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "removed" in errors[0] and ".part" not in errors[0]
    assert errors[0].startswith("error: celeba256_250000.pt (downloaded): ")
    assert list(w.iterdir()) == []
