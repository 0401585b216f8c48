"""Progress of long loops (training epochs, labeling, teacher logits).

On a terminal a loop shows a tqdm bar. When stderr is not a terminal (a log file, a CI job, a
pipe) a bar would write a carriage-return frame per update, thousands of them per epoch, so
:func:`progress` logs one line per tenth of the loop instead (``log_every``), through ``logging``.

One switch turns off both ours and the Hugging Face libraries' bars (weight loading, downloads):
:func:`set_progress`, which the commands call with ``--show_progress/--no_show_progress``.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional

from tqdm.auto import tqdm

logger = logging.getLogger("nlp_distill.progress")

_state = {"enabled": True}


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (where bars redraw in place)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def set_progress(enabled: bool) -> None:
    """Turn progress display on or off for this process: our loops (bars or log lines) and the
    Hugging Face libraries' bars. Off, or on with stderr not a terminal, the HF bars are disabled
    (``transformers.utils.logging.disable_progress_bar`` and ``HF_HUB_DISABLE_PROGRESS_BARS``,
    which libraries imported later read too)."""
    _state["enabled"] = bool(enabled)
    if enabled and stderr_is_terminal():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def progress_enabled() -> bool:
    """What :func:`set_progress` last set (on by default)."""
    return _state["enabled"]


class LogProgress:
    """The part of tqdm's interface the library uses (iteration, ``update``, ``set_postfix``,
    ``close``), logging ``desc: n/total unit (p%), rate`` each time another ``log_every`` of the
    total is done (every ``interval_s`` seconds when the total is unknown), and a last line at the
    end unless ``leave`` is false (tqdm's meaning: the bar goes when done; a caller that logs its
    own summary, like the trainer's epoch line, passes it)."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", log_every: float = 0.1, interval_s: float = 60.0, leave: bool = True) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.log_every, self.interval_s = log_every, interval_s
        self.n, self.postfix = 0, ""
        self._start = self._last_time = time.perf_counter()
        self._next_fraction = log_every
        self._closed = not leave  # nothing left to log at the end

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, **kwargs: Any) -> None:
        """Extra figures appended to the next line (``loss=0.41``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _line(self) -> str:
        secs = max(time.perf_counter() - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}{of} {self.unit}{pct}, {self.n / secs:.1f} {self.unit}/s{extra}"

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; log a line when another ``log_every`` of the total is done."""
        self.n += n
        now = time.perf_counter()
        if self.total:
            if self.n < self.total and self.n / self.total >= self._next_fraction:
                logger.info(self._line())
                while self._next_fraction <= self.n / self.total:
                    self._next_fraction += self.log_every
        elif now - self._last_time >= self.interval_s:
            logger.info(self._line())
            self._last_time = now

    def close(self) -> None:
        """Log the final line (once; never with ``leave=False``)."""
        if not self._closed:
            self._closed = True
            if self.n:
                logger.info(self._line())


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "", unit: str = "it",
             enabled: bool = True, log_every: float = 0.1, **tqdm_kwargs: Any):
    """A progress display for a loop: a tqdm bar when stderr is a terminal, else
    :class:`LogProgress` (a line per ``log_every`` of the total); nothing when ``enabled`` is false
    or :func:`set_progress` turned progress off.

    Args:
        iterable: what the loop walks (or ``None`` and call ``update``).
        total: items expected (default: ``len(iterable)`` when it has one).
        enabled: this loop's own switch (e.g. off on torchrun ranks other than 0).
        log_every: the fraction of the total between two log lines off a terminal.
        tqdm_kwargs: passed to tqdm on a terminal (``leave``, ``dynamic_ncols``); off a terminal,
            ``leave=False`` drops the last line.
    """
    if not (enabled and progress_enabled()):
        return tqdm(iterable, total=total, disable=True)
    if stderr_is_terminal():
        return tqdm(iterable, total=total, desc=desc, unit=unit, **tqdm_kwargs)
    return LogProgress(iterable, total, desc, unit, log_every, leave=tqdm_kwargs.get("leave", True))
