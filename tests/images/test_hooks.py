"""images/hooks.py: the per-batch hook's defaults, the files it names for an image and plans for the run."""
from pathlib import Path

from repaint_cli.core.keys import ImageKeys
from repaint_cli.images.hooks import BatchHook
from repaint_cli.images.jobs import Job


def job(tmp_path, stem="cat"):
    return Job(image=tmp_path / f"{stem}.png", stem=stem, output=tmp_path / "out" / f"{stem}.png",
               keys=ImageKeys.of(0, stem))


class SideFiles(BatchHook):
    side_suffixes = ("_concat.png", "_x0.png")
    option = "--concat"


def test_a_plain_hook_writes_nothing_and_needs_no_step_callback(tmp_path):
    hook = BatchHook()
    assert hook.files_for(job(tmp_path)) == [] and hook.planned_files(job(tmp_path)) == []
    assert hook.step_callback([]) is None and not hook.from_disk
    assert hook.finish(None, None, None, submit=lambda *a: None) is None


def test_side_files_sit_beside_the_output_and_are_planned_under_their_option(tmp_path):
    hook = SideFiles()
    files = hook.files_for(job(tmp_path))
    assert files == [tmp_path / "out" / "cat_concat.png", tmp_path / "out" / "cat_x0.png"]
    assert hook.planned_files(job(tmp_path)) == [(f, "--concat", False) for f in files]
    assert all(isinstance(f, Path) for f in files)
