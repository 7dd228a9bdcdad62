"""``python -m atoma_lab``: the same as the ``atoma-lab`` command."""

from atoma_lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
