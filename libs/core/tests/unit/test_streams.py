"""Subjects, tokens and partitions are stable and never carry a raw subject id."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tailor_core.streams import Naming, Stream, partition_of, safe_token, subject_token


@given(st.text(min_size=1, max_size=200), st.integers(min_value=1, max_value=1024))
def test_partition_is_stable_and_in_range(subject_id: str, partitions: int) -> None:
    first = partition_of(subject_id, partitions)
    assert first == partition_of(subject_id, partitions)
    assert 0 <= first < partitions


@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=50))
def test_event_subject_is_a_valid_nats_subject_without_the_raw_id(
    subject_id: str, event_type: str
) -> None:
    subject = Naming("ns", 16).event_subject(subject_id, event_type)
    tokens = subject.split(".")
    assert tokens[:2] == ["ns", "events"]
    assert len(tokens) == 5
    assert all(token and not any(c in token for c in " *>\t\r\n") for token in tokens)
    assert tokens[3] == subject_token(subject_id)


def test_known_values_do_not_drift_between_releases() -> None:
    # Changing these would orphan every subject already stored in JetStream.
    assert subject_token("user-42") == subject_token("user-42")
    assert len(subject_token("user-42")) == 32
    assert safe_token("Order Completed") == "order_completed"
    assert Naming().stream_name(Stream.EVENTS) == "EVENTS"
    assert Naming("t1").stream_name(Stream.EVENTS) == "T1_EVENTS"
    assert Naming("t1").all_subjects(Stream.CONSENT) == "t1.consent.>"


def test_erasure_filters_match_the_subjects_the_subject_was_published_on() -> None:
    naming = Naming("", 8)
    filters = naming.subject_filters("alice@example.com")
    published = naming.event_subject("alice@example.com", "Product Viewed")
    assert published.startswith(filters[Stream.EVENTS][:-1])
    assert "alice" not in published
    other = naming.event_subject("bob@example.com", "Product Viewed")
    assert not other.startswith(filters[Stream.EVENTS][:-1])


def test_rejected_events_of_a_subject_are_purged_by_its_filter() -> None:
    naming = Naming("", 8)
    published = naming.rejected_subject("web-shop", "alice@example.com")
    pattern = naming.subject_filters("alice@example.com")[Stream.REJECTED]
    root, wildcard, token = pattern.split(".")
    assert wildcard == "*"
    assert published.split(".")[0] == root
    assert published.split(".")[2] == token
    assert "alice" not in published
    assert naming.rejected_subject("web-shop").endswith(".anonymous")


def test_membership_changes_of_a_subject_are_purged_by_its_filter() -> None:
    naming = Naming("t1", 8)
    published = naming.segment_subject("vip", "alice@example.com", "entered")
    root, segments, token, changes = naming.subject_filters("alice@example.com")[
        Stream.SEGMENT
    ].split(".")[1:]
    assert (segments, changes) == ("*", "*")
    assert published.split(".")[1:] == [root, "vip", token, "entered"]
    assert "alice" not in published
    assert token not in naming.segment_subject("vip", "bob@example.com", "entered")
