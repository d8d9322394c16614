"""Entry point: `tailor-consent` or `python -m tailor_consent`."""

from tailor_consent.bootstrap import DEFINITION
from tailor_core.app import main as run_service


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
