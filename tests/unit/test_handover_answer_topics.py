"""Who may answer a handover over Kafka: one answers topic per receiver type, owned by its one reader."""

from __future__ import annotations

from hub.handovers.answers import kafka_answer_refusal, kept_sender
from hub.topics import CONSUMED, HANDOVER_RECEIVERS, all_topics, handover_answers, handover_outbound
from schemas.handover import ReceiverType

TOPIC, OUTBOUND = "handover.answers.jeugdhulp.v1", "handover.outbound.jeugdhulp.v1"


def refusal(readers: list[str], sender: str, receiver: str | None = "jeugdhulp-dh") -> str | None:
    return kafka_answer_refusal(TOPIC, OUTBOUND, readers, sender, "h-1", receiver)


def test_every_receiver_type_has_an_answers_topic_beside_its_outbound_topic_with_a_dlq() -> None:
    assert set(HANDOVER_RECEIVERS) == {t.value.lower() for t in ReceiverType}
    names = {t.name for t in all_topics()}
    for receiver in HANDOVER_RECEIVERS:
        answers = handover_answers(receiver)
        assert answers.name == f"handover.answers.{receiver}.v1"
        assert {answers.name, answers.dlq, handover_outbound(receiver).name} <= names
        assert answers in CONSUMED


def test_the_one_reader_of_the_outbound_topic_answers_its_own_handovers() -> None:
    assert refusal(["jeugdhulp-dh"], "jeugdhulp-dh") is None
    # a handover the hub does not know is record_answer's to refuse (404), as over HTTP
    assert refusal(["jeugdhulp-dh"], "jeugdhulp-dh", receiver=None) is None


def test_an_answer_naming_another_organisation_is_refused() -> None:
    why = refusal(["jeugdhulp-dh"], "jongerenwerk-dh")
    assert why is not None
    assert "'jongerenwerk-dh'" in why and "'jeugdhulp-dh'" in why and TOPIC in why


def test_a_refusal_keeps_a_sender_that_is_no_organisation_id_out_of_its_reason() -> None:
    """The reason goes into the dead letter's headers: the producer's free text stays out of it."""
    for text in ("Jan de Vries", "123456782"):
        why = refusal(["jeugdhulp-dh"], text)
        assert why is not None and text not in why and "'jeugdhulp-dh'" in why, why
        assert kept_sender(text) in why


def test_an_answer_to_a_handover_sent_elsewhere_is_refused() -> None:
    why = refusal(["jeugdhulp-dh"], "jeugdhulp-dh", receiver="veilig-thuis-dh")
    assert why == (f"handover h-1 went to 'veilig-thuis-dh', not to 'jeugdhulp-dh', which answers on {TOPIC}")


def test_a_topic_without_exactly_one_kafka_reader_answers_for_nobody() -> None:
    for readers in ([], ["jeugdhulp-dh", "jeugdhulp-rijswijk"]):
        for sender in ("jeugdhulp-dh", "jongerenwerk-dh"):
            why = refusal(readers, sender)
            assert why is not None and OUTBOUND in why and "answers for none" in why
    assert "read by no organisation" in str(refusal([], "jeugdhulp-dh"))
    assert "2 organisations (jeugdhulp-dh, jeugdhulp-rijswijk)" in str(
        refusal(["jeugdhulp-dh", "jeugdhulp-rijswijk"], "jeugdhulp-dh")
    )


def test_the_audit_log_keeps_a_refused_records_sender_only_when_it_is_an_organisation_id() -> None:
    """The sender a refused record names is the producer's own free text, kept for years: a name or a
    BSN typed there was written into the audit log as it came."""
    assert kept_sender("jongerenwerk-dh") == "jongerenwerk-dh"
    for text in ("Jan de Vries", "123456782", "jeugd-123456782", "x" * 65, "Jongerenwerk-DH"):
        kept = kept_sender(text)
        assert text not in kept and kept.startswith("(geen organisatie-id"), (text, kept)
