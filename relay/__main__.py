"""`python -m relay` runs the CLI."""

from relay.cli import main

if __name__ == "__main__":  # download workers are spawned processes that import this module too
    main()
