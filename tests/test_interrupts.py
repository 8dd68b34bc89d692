"""A tool interrupted while it writes (SIGINT from a terminal, SIGTERM from the pipeline,
Nextflow or a batch system) leaves no partial output and no temporary, says so in one line
and dies by that signal: never 'Aborted!' with exit 1, never an exit code of 130-145."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import sys, time, types, click
from medflow.cli import COMMANDS, main
from medflow.io.atomic import atomic_outputs

@click.command("slow")
@click.argument("out")
def slow(out):
    with atomic_outputs() as o:
        o.path(out + "/a.nii.gz").write_text("partial")
        o.path(out + "/a.json").write_text("partial")
        print("writing", flush=True)
        time.sleep(60)

sys.modules["slow_cmd"] = types.SimpleNamespace(slow=slow)
COMMANDS["_slow"] = ("slow_cmd:slow", "test only")
sys.argv = ["medflow", "_slow", sys.argv[1]]
main()
"""


def _block(sig):
    """A parent that blocked the signal (e.g. a test runner's worker thread): the child
    inherits the mask."""
    return lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {sig})


@pytest.mark.parametrize("blocked", [False, True], ids=["plain", "parent_blocked_it"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_tool_leaves_nothing_and_dies_by_the_signal(tmp_path, sig, blocked):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_block(sig) if blocked else None)
    assert proc.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 2  # the two temporaries
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -sig, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"medflow: interrupted by {sig.name}; no partial output was left"]
    assert list(tmp_path.iterdir()) == []
