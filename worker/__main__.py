"""``leadwerk`` and ``python -m worker``: the command line, started without the collector."""

import gc


def main() -> None:
    """Start-up (modules, models, the config, the store) makes some 175,000 objects that
    live as long as the process; the cyclic garbage collector would walk them again and
    again while they are made, 0.1 s of every command's start. It is paused until the
    command's start is over (``cli._started``), which also keeps them out of its passes."""
    gc.disable()
    from worker.commands import cli

    cli.main()


if __name__ == "__main__":
    main()
