"""``python -m demo`` (what ``make demo`` runs)."""

from demo.launcher import main

if __name__ == "__main__":
    main()
