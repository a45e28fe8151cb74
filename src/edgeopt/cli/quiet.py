"""Third-party chatter kept off the terminal in normal use (``--debug`` shows it all).

Libraries report their own housekeeping through ``logging`` and ``warnings``: torchao logs
"Failed to load …/_C_mxfp8….so" for CUDA kernels a CPU machine cannot load, torch's pytree logs
that torchao's ``register_constant()`` calls on enums are deprecated, and several libraries
emit deprecation warnings. None of it concerns an edgeopt user, so the CLI entry point lowers
those loggers to errors and ignores the deprecation categories before anything is imported.
"""

from __future__ import annotations

import logging
import warnings

# loggers whose warnings are about the library itself, not about the user's model or data
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def silence_library_noise() -> None:
    """Ignore libraries' deprecation warnings and lower their housekeeping loggers to errors."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
