"""Entry point: `tailor-recommend` or `python -m tailor_recommend`."""

from tailor_core.app import main as run_service
from tailor_recommend.bootstrap import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
