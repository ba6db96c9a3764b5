"""dfwatch-train subcommands: one module each, exposing ``register(sub)``.

``register`` adds the subcommand's parser and sets ``func``; heavy imports (torch,
ultralytics, optuna) happen inside the command function, never at import.
"""

# Order of the subcommands in ``dfwatch-train --help``: the chain, then the tools.
COMMANDS = (
    "dataset",
    "search",
    "fit",
    "evaluate",
    "export",
    "engines",
    "all",
    "pack",
    "detector",
    "realfaces",
    "validate",
    "calibrate",
    "placeholders",
)
