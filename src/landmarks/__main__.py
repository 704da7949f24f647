"""`python -m landmarks <command>`."""

from landmarks.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
