"""examples/train_tiny_lm.py, small: the same losses on one process (PyTorch
SDPA) and on 2 ranks under torchrun (ringattn.ring_attention), step by step,
within 1e-4 relative."""
import json
import os
import subprocess
import sys

from conftest import UCX_ENV, free_port

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_tiny_lm.py")


def _run(cmd, tmp_path, name):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, **UCX_ENV)
    proc = subprocess.run(cmd + ["--seq", "768", "--steps", "6", "--losses", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())["losses"]


def test_ring_training_matches_one_process(tmp_path):
    single = _run([sys.executable, EXAMPLE], tmp_path, "single")
    ring = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                 "--master-port", str(free_port()), EXAMPLE, "--ring"], tmp_path, "ring")
    assert len(single) == len(ring) == 6
    for step, (a, b) in enumerate(zip(single, ring)):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: sdpa {a}, ring {b}"
