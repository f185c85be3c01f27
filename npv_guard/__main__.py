"""`python -m npv_guard`: the same command as `npv-guard`."""

from npv_guard.cli import main

if __name__ == "__main__":
    main()
