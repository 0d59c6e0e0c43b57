"""Dead letters, beside the delivery engine: the drain that makes every dead letter a row,
and what operators do with those rows (list, show, purge) and with poison messages.

The shell (`hookline`) and the engine's worker import from here only; the modules behind
it are `drain`, `filters`, `view` and `poison`.
"""

from dispatcher.deadletters.drain import DeadLetterDrain
from dispatcher.deadletters.filters import DeadFilter, FilterError, Summary
from dispatcher.deadletters.filters import page as list_dead
from dispatcher.deadletters.filters import purge as purge_dead
from dispatcher.deadletters.filters import summarize as summarize_dead
from dispatcher.deadletters.poison import PoisonFilter, ResubmitError
from dispatcher.deadletters.poison import drain as drain_poison
from dispatcher.deadletters.poison import page as list_poison
from dispatcher.deadletters.poison import purge as purge_poison
from dispatcher.deadletters.poison import resubmit as resubmit_poison
from dispatcher.deadletters.view import detail as show_dead

__all__ = [
    "DeadFilter",
    "DeadLetterDrain",
    "FilterError",
    "PoisonFilter",
    "ResubmitError",
    "Summary",
    "drain_poison",
    "list_dead",
    "list_poison",
    "purge_dead",
    "purge_poison",
    "resubmit_poison",
    "show_dead",
    "summarize_dead",
]
