"""``python -m zmqapp``: the same command line as the ``zmqapp`` script."""

from .cli import main

if __name__ == "__main__":
    main()
