"""``lstmvis extract-genome``: a PyTorch conv + recurrent model of one-hot DNA over a genome project, in
sliding windows, checked against the genomic demo's NumPy forward pass of the same weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pyfaidx", reason="the genome is brought in with convert-fasta (the genomics extra)")

from gpu_matcher import open_project  # noqa: E402
from gpu_matcher.cli import main  # noqa: E402
from gpu_matcher.demo import danq, genome_demo  # noqa: E402
from gpu_matcher.demo.danq_torch import demo_model  # noqa: E402
from gpu_matcher.demo.genome import synthesize, write_genome  # noqa: E402
from gpu_matcher.errors import ProjectError  # noqa: E402
from gpu_matcher.extract.genome import extract_genome  # noqa: E402
from gpu_matcher.genome.fasta import convert_fasta  # noqa: E402


@pytest.fixture(scope="module")
def tiny_genome(tmp_path_factory):
    """Two contigs of a few kilobases (one shorter than two windows), converted with convert-fasta."""
    root = tmp_path_factory.mktemp("tiny-genome")
    fasta, _ = write_genome(synthesize(11, contigs=(("chrA", 5_300), ("chrB", 3_100))), root / "inputs")
    return convert_fasta(fasta, root / "project", format="h5", progress=False)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_extract_genome_equals_the_numpy_demo(tiny_genome, tmp_path, capsys):
    """The CLI with the demo's weights gives the states the NumPy demo writes (same windows)."""
    ours = _copy(tiny_genome, tmp_path / "numpy")
    genome_demo.write_states(ours, danq.load_model())
    theirs = _copy(tiny_genome, tmp_path / "torch")
    assert main(["extract-genome", str(theirs), "--model", str(danq.WEIGHTS_PATH), "--rnn", "lstm",
                 "--module", "relu", "--window", str(danq.WINDOW), "--stride", str(danq.STRIDE),
                 "--quiet"]) == 0
    assert "states written" in capsys.readouterr().out
    a, b = open_project(ours), open_project(theirs)
    assert list(b.sources) == ["states::lstm.cell_layer1", "states::lstm.hidden_layer1", "states::relu"]
    assert b.T == a.T == 8_400
    for mine, other in (("cell_layer1", "lstm.cell_layer1"), ("hidden_layer1", "lstm.hidden_layer1"),
                        ("conv1", "relu")):
        x = a.source(f"states::{mine}").raw(0, a.T).astype(np.float32)
        y = b.source(f"states::{other}").raw(0, b.T).astype(np.float32)
        np.testing.assert_allclose(x, y, rtol=2e-3, atol=2e-3)        # both float16
    for protein in danq.load_model().proteins:
        np.testing.assert_allclose(a.meta[f"pred_{protein}"].values(0, a.T),
                                   b.meta[f"pred_{protein}"].values(0, b.T), atol=1e-4)
    a.close()
    b.close()


def test_whole_pickled_model_and_default_modules(tiny_genome, tmp_path):
    """A ``.pt`` holding the whole module; without --rnn/--module every RNN and Conv1d is recorded."""
    project = _copy(tiny_genome, tmp_path / "p")
    torch.save(demo_model(), tmp_path / "model.pt")
    assert main(["extract-genome", str(project), "--model", str(tmp_path / "model.pt"), "--window", "600",
                 "--stride", "300", "--outputs", "a,b,c", "--format", "zarr", "--quiet"]) == 0
    p = open_project(project)
    assert list(p.sources) == ["states::lstm.cell_layer1", "states::lstm.hidden_layer1", "states::conv"]
    assert {"pred_a", "pred_b", "pred_c"} <= set(p.meta) and p.sources["states::conv"].D == 32
    assert (project / "states.zarr").is_dir() and not (project / "states.zarr.tmp").exists()
    # The same model in the same windows over the same bases: h5 and Zarr hold the same states.
    again = _copy(tiny_genome, tmp_path / "h5")
    extract_genome(demo_model(), again, window=600, stride=300, format="h5", progress=False)
    q = open_project(again)
    np.testing.assert_array_equal(p.source("states::conv").raw(0, p.T), q.source("states::conv").raw(0, q.T))
    p.close()
    q.close()
    with pytest.raises(ProjectError, match="already has states"):
        extract_genome(demo_model(), project, progress=False)


def test_a_model_that_pools_is_a_clear_error(tiny_genome, tmp_path):
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 8, 5, padding=2)
            self.pool = torch.nn.MaxPool1d(4)

        def forward(self, x):
            return self.pool(self.conv(x)).transpose(1, 2)

    project = _copy(tiny_genome, tmp_path / "p")
    with pytest.raises(ProjectError, match="one row per base"):
        extract_genome(Pooled(), project, modules=["pool"], progress=False)
    assert not (project / "states.h5").exists() and not (project / "states.h5.tmp").exists()
    with pytest.raises(ProjectError, match="--outputs a: 1 names for the model's 3 output columns"):
        extract_genome(demo_model(), project, outputs=["a"], progress=False)


def test_batches_and_threads_change_no_value(tiny_genome, tmp_path):
    """Batches of 3 windows on one thread (windows spanning a contig's end) give the states of the
    default batches (sized from the memory a window takes), and the thread count is restored."""
    threads = torch.get_num_threads()
    found = []
    for name, kwargs in (("small", {"batch_size": 3, "threads": 1}), ("auto", {})):
        project = _copy(tiny_genome, tmp_path / name)
        extract_genome(demo_model(), project, window=600, stride=300, dtype="float32", progress=False, **kwargs)
        assert torch.get_num_threads() == threads
        found.append(open_project(project))
    small, auto = found
    for source in small.sources:
        np.testing.assert_allclose(small.source(source).raw(0, small.T), auto.source(source).raw(0, auto.T),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(small.meta["pred_ctcf"].values(0, small.T), auto.meta["pred_ctcf"].values(0, auto.T),
                               atol=1e-6)
    small.close()
    auto.close()
    with pytest.raises(ProjectError, match="--threads 0: must be >= 1"):
        extract_genome(demo_model(), tiny_genome, threads=0, progress=False)
