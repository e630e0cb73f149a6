"""What a run prints: its console lines and the epoch's progress bar, on rank 0 only."""

from __future__ import annotations

from typing import Callable

__all__ = ["Console"]


class Console:
    """Console lines and progress bars of a run.

    Args:
        progress: show tqdm bars (the lines then go through ``tqdm.write`` so a bar is not broken).
        enabled: print at all (False off rank 0). Without bars, each line is printed and flushed,
            so a redirected log shows it as it happens.
    """

    def __init__(self, progress: bool, enabled: bool):
        self.progress = progress and enabled
        self.echo: Callable[[str], None] = _echo(self.progress, enabled)

    def epoch_bar(self, epoch: int, epochs: int, position: int, limit: int, batch_size: int):
        """A tqdm bar over this epoch's time steps (counted in tokens), or None without bars."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=limit, initial=min(position, limit), unit="tok", unit_scale=batch_size,
                    desc=f"epoch {epoch}/{epochs}", dynamic_ncols=True, leave=False)


def _echo(progress: bool, enabled: bool) -> Callable[[str], None]:
    if not enabled:
        return lambda message: None
    if not progress:
        return lambda message: print(message, flush=True)
    from tqdm.auto import tqdm

    return tqdm.write
