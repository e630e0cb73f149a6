"""Space files for the tune tests (a module of its own: `from conftest import` would find another
directory's conftest once the whole suite is collected)."""

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_space(folder: Path, corpus: Path, body: str, max_steps: int = 30) -> Path:
    """``folder/space.toml`` on configs/tiny.toml (copied beside it) with ``body`` after [fixed]."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / "tiny.toml", folder / "tiny.toml")
    path = folder / "space.toml"
    path.write_text(f'base = "tiny.toml"\n\n[fixed]\ndata.dataset = "{corpus}"\ntrain.max_steps = {max_steps}\n'
                    f"train.epochs = 100\ntrain.log_interval = 5\n\n{body}", encoding="utf-8")
    return path
