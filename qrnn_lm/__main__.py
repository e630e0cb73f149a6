"""``python -m qrnn_lm``: the same command line as the ``qrnn-lm`` script."""

from .cli import main

if __name__ == "__main__":
    main()
