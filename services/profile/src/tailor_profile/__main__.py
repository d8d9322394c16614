"""Entry point: `tailor-profile` or `python -m tailor_profile`."""

from tailor_core.app import main as run_service
from tailor_profile.bootstrap import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
