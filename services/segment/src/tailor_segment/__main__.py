"""Entry point: `tailor-segment` or `python -m tailor_segment`."""

from tailor_core.app import main as run_service
from tailor_segment.bootstrap import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
