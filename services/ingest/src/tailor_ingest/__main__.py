"""Entry point: `tailor-ingest` or `python -m tailor_ingest`."""

from tailor_core.app import main as run_service
from tailor_ingest.bootstrap import DEFINITION


def main() -> None:
    run_service(DEFINITION)


if __name__ == "__main__":
    main()
