"""Offline rendering of prompt sheets: exact lengths, seamless loops, pedalboard effect chains,
loudness normalisation, DAW-readable WAV metadata, resumable batches (``sa3 render``)."""

from .runner import InProcessRenderer, OutputResult, render_sheet, summary_table
from .sheet import Job, JobSpec, Sheet, SheetError, load_sheet

__all__ = [
    "InProcessRenderer",
    "Job",
    "JobSpec",
    "OutputResult",
    "Sheet",
    "SheetError",
    "load_sheet",
    "render_sheet",
    "summary_table",
]
