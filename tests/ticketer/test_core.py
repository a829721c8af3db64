"""The ticketer's rules as pure functions: one batch of mails, the facts PostgreSQL holds, the plans."""

from datetime import UTC, datetime

from mailintake.contracts.records import Decision, TicketEventKind
from services.ticketer.core import (
    AddStep,
    AppliedMail,
    AttachNote,
    BatchFacts,
    KnownTicket,
    KnownUser,
    OpenTicket,
    PlannedLocation,
    PlannedTicket,
    PlannedUser,
    Reject,
    base_login,
    bundle_window,
    events_for,
    format_reference,
    numbered_logins,
    plan_batch,
    reference_number,
    split_address,
    unattached_bounce_flag,
)
from services.ticketer.settings import UnknownReferencePolicy
from tests.ticketer.mails import classified

NEW = UnknownReferencePolicy.NEW_TICKET
REJECT = UnknownReferencePolicy.REJECT
FALLBACK = KnownUser(id=7, login="hotline-unknown", location_id=None)
KNOWN = {"max@example.com": KnownUser(id=3, login="max", location_id=11)}


def plan(mails, facts=None, policy=NEW, **_):
    return plan_batch(mails, facts or BatchFacts(), policy)


def test_reference_round_trip():
    assert format_reference("mi", 10042) == "[#mi-10042]"
    assert reference_number("[#mi-10042]") == 10042
    assert reference_number("[#mi-]") is None


def test_logins_are_the_local_part_then_numbered():
    assert base_login("max.mustermann") == "max.mustermann"
    assert base_login("") == "user"
    # The first claim of a base starts from the counter at 1 (the base itself).
    assert numbered_logins("max.mustermann", 3, 2) == ["max.mustermann-2", "max.mustermann-3"]
    assert numbered_logins("info", 41, 1) == ["info-41"]
    assert numbered_logins("info", 41, 0) == []
    assert split_address("Max.Mustermann@Example.COM") == ("max.mustermann", "example.com")
    assert split_address("postmaster") == ("postmaster", "")


def test_bundle_window_is_this_and_the_previous_cycle():
    assert bundle_window(18342) == (18341, 18342)


# --- follow-ups ---------------------------------------------------------------


def test_follow_up_to_an_existing_ticket_adds_a_step():
    ticket = KnownTicket(10042, "Zugang gesperrt", "closed", None, None)
    mail = classified("a", "1", decision=Decision.FOLLOW_UP, reference="[#mi-10042]")
    [result] = plan([mail], BatchFacts(tickets={10042: ticket}))
    assert result == AddStep(10042, "Zugang gesperrt", bundled=False)


def test_follow_up_to_a_missing_ticket_opens_one_or_is_rejected_by_setting():
    mail = classified("a", "1", decision=Decision.FOLLOW_UP, reference="[#mi-99999]", fallback_user="hotline-unknown")
    facts = BatchFacts(users_by_login={"hotline-unknown": FALLBACK})
    [opened] = plan([mail], facts, NEW)
    assert isinstance(opened, OpenTicket) and opened.fields.bundle_key is None
    [rejected] = plan([mail], facts, REJECT)
    assert rejected == Reject("reference [#mi-99999] names no ticket of this installation")


def test_follow_up_to_a_missing_ticket_is_rejected_when_the_account_takes_no_new_tickets():
    mail = classified("a", "1", decision=Decision.FOLLOW_UP, reference="[#mi-99999]", no_new_tickets=True)
    [result] = plan([mail], policy=NEW)
    assert isinstance(result, Reject) and "accepts follow-ups only" in result.reason


# --- emails do not create new tickets ----------------------------------------


def test_rejected_mail_keeps_the_classifiers_reason():
    mail = classified("a", "1", decision=Decision.REJECT, reason="the account accepts follow-ups only")
    assert plan([mail]) == [Reject("the account accepts follow-ups only")]


def test_new_ticket_candidate_of_an_account_without_new_tickets_is_rejected():
    mail = classified("a", "1", no_new_tickets=True, fallback_user="hotline-unknown")
    [result] = plan([mail], BatchFacts(users_by_login={"hotline-unknown": FALLBACK}))
    assert isinstance(result, Reject) and "follow-ups only" in result.reason


# --- unknown senders -----------------------------------------------------------


def test_known_sender_owns_the_ticket_case_insensitively():
    mail = classified("a", "1", sender="MAX@Example.com", create_user_from_local_part=True)
    [result] = plan([mail], BatchFacts(users_by_email=KNOWN))
    assert isinstance(result, OpenTicket)
    assert (result.owner, result.location, result.creates_user) == (3, 11, None)


def test_unknown_sender_becomes_a_user_named_after_the_local_part():
    mail = classified("acc", "1", sender="Max.Mustermann@Example.com", sender_name="Max M", create_user_from_local_part=True)
    [result] = plan([mail])
    assert isinstance(result, OpenTicket)
    assert result.creates_user == PlannedUser("max.mustermann@example.com", "max.mustermann", "Max M", None, "acc")
    assert result.owner == result.creates_user and result.creates_location is None


def test_the_domain_becomes_a_location_that_the_new_user_gets():
    mail = classified("a", "1", sender="max@kunde.example", create_user_from_local_part=True, create_location_from_domain=True)
    [result] = plan([mail])
    assert result.creates_location == PlannedLocation("kunde.example")
    assert result.creates_user.location == PlannedLocation("kunde.example") == result.location


def test_an_existing_location_of_the_domain_is_reused():
    mail = classified("a", "1", sender="max@kunde.example", create_user_from_local_part=True, create_location_from_domain=True)
    [result] = plan([mail], BatchFacts(locations_by_domain={"kunde.example": 5}))
    assert result.creates_location is None and result.creates_user.location == 5 == result.location


def test_without_user_creation_the_fallback_user_owns_the_ticket():
    mail = classified("a", "1", sender="new@kunde.example", fallback_user="hotline-unknown")
    [result] = plan([mail], BatchFacts(users_by_login={"hotline-unknown": FALLBACK}))
    assert isinstance(result, OpenTicket) and result.owner == 7 and result.creates_user is None


def test_a_missing_fallback_user_rejects_the_mail():
    mail = classified("a", "1", sender="new@kunde.example", fallback_user="nobody")
    [result] = plan([mail])
    assert result == Reject("the sender new@kunde.example is unknown and the account's fallback user 'nobody' does not exist")


def test_no_user_creation_and_no_fallback_rejects_the_mail():
    [result] = plan([classified("a", "1", sender="new@kunde.example")])
    assert isinstance(result, Reject) and "neither creates users nor names a ticket user" in result.reason


def test_a_later_mail_of_the_batch_reuses_the_user_and_location_an_earlier_one_creates():
    options = dict(create_user_from_local_part=True, create_location_from_domain=True, auto_bundle=False)
    first = classified("a", "1", sender="max@kunde.example", subject="one", **options)
    second = classified("a", "2", sender="max@kunde.example", subject="two", **options)
    colleague = classified("a", "3", sender="erika@kunde.example", subject="three", **options)
    one, two, three = plan([first, second, colleague])
    assert two.owner == one.creates_user and two.creates_user is None
    assert three.creates_user is not None and three.creates_location is None
    assert three.creates_user.location == one.creates_location


# --- bundling ----------------------------------------------------------------------


def open_ticket_fields(mails):
    return [p.fields if isinstance(p, OpenTicket) else p for p in plan(mails, BatchFacts(users_by_email=KNOWN))]


def test_same_sender_and_subject_bundle_in_the_same_and_the_next_cycle_only():
    mails = [classified("a", str(i), sender="max@example.com", poll_cycle=c) for i, c in enumerate([5, 5, 6, 7, 8, 10])]
    plans = plan(mails, BatchFacts(users_by_email=KNOWN))
    kinds = [type(p).__name__ + (f"->{p.ticket.index}" if isinstance(p, AddStep) else "") for p in plans]
    # cycle 5 opens, 5 and 6 join it; 7 opens anew, 8 joins that; 10 opens a third.
    assert kinds == ["OpenTicket", "AddStep->0", "AddStep->0", "OpenTicket", "AddStep->1", "OpenTicket"]


def test_an_open_bundle_in_postgresql_takes_the_mail():
    mail = classified("a", "1", sender="max@example.com", poll_cycle=42)
    stored = KnownTicket(10050, "Printer jammed", "open", mail.bundle_key, 41)
    assert plan([mail], BatchFacts(tickets={10050: stored}, users_by_email=KNOWN)) == [
        AddStep(10050, "Printer jammed", bundled=True)
    ]
    too_old = KnownTicket(10050, "Printer jammed", "open", mail.bundle_key, 40)
    [result] = plan([mail], BatchFacts(tickets={10050: too_old}, users_by_email=KNOWN))
    assert isinstance(result, OpenTicket)


def test_other_sender_or_other_subject_does_not_bundle():
    known = {**KNOWN, "erika@example.com": KnownUser(4, "erika", None)}
    mails = [
        classified("a", "1", sender="max@example.com", subject="Printer"),
        classified("a", "2", sender="erika@example.com", subject="Printer"),
        classified("a", "3", sender="max@example.com", subject="VPN"),
    ]
    assert [type(p) for p in plan(mails, BatchFacts(users_by_email=known))] == [OpenTicket] * 3


def test_bundling_off_makes_every_mail_its_own_ticket():
    mails = [classified("a", str(i), sender="max@example.com", auto_bundle=False) for i in range(3)]
    plans = plan(mails, BatchFacts(users_by_email=KNOWN))
    assert [type(p) for p in plans] == [OpenTicket] * 3
    assert all(p.fields.bundle_key is None for p in plans)


def test_a_bundled_mail_of_an_unknown_sender_needs_no_owner():
    first = classified("a", "1", sender="new@kunde.example", create_user_from_local_part=True)
    second = classified("a", "2", sender="new@kunde.example", create_user_from_local_part=True)
    opened, bundled = plan([first, second])
    assert isinstance(opened, OpenTicket) and bundled == AddStep(PlannedTicket(0), "Printer jammed", bundled=True)


# --- events --------------------------------------------------------------------------


def test_events_name_created_location_and_user_before_the_ticket_with_stable_ids():
    mail = classified("acc", "imap:1:7", sender="Max@Kunde.example")
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    applied = AppliedMail(TicketEventKind.TICKET_CREATED, 10057, "Printer", None, "max", "kunde.example")
    events = events_for(mail, applied, at)
    assert [(e.kind, e.event_id) for e in events] == [
        (TicketEventKind.LOCATION_CREATED, "acc:imap:1:7:LOCATION_CREATED"),
        (TicketEventKind.USER_CREATED, "acc:imap:1:7:USER_CREATED"),
        (TicketEventKind.TICKET_CREATED, "acc:imap:1:7:TICKET_CREATED"),
    ]
    assert {e.ticket_number for e in events} == {10057}
    assert events_for(mail, applied, at) == events


def bounce(mail, original: str | None, status: str | None = "5.1.1"):
    return mail.model_copy(update={"bounce": True, "bounce_original_message_id": original, "bounce_status": status})


OUR_ANSWER = "<mi-42.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@desk.example>"
TICKET_42 = {42: KnownTicket(42, "Printer jammed", "closed", None, None)}


def test_a_bounce_of_a_mail_we_sent_is_a_note_on_its_ticket_whatever_the_decision():
    facts = BatchFacts(tickets=TICKET_42, tickets_by_message_id={OUR_ANSWER: 42})
    for decision in (Decision.REJECT, Decision.NEW_TICKET):
        mail = bounce(classified("a", "1", sender="mailer-daemon@kunde.test", decision=decision), OUR_ANSWER)
        [planned] = plan([mail], facts)
        assert isinstance(planned, AttachNote) and planned.ticket == 42
        assert planned.reason == f"bounce (5.1.1) of {OUR_ANSWER} attached as a note"
        assert unattached_bounce_flag(mail) is not None  # only used when no note is planned


def test_a_bounce_whose_original_has_no_ticket_is_handled_as_decided_and_flagged():
    mail = bounce(classified("a", "1", decision=Decision.REJECT, reason="loop"), "<someone@else.example>")
    [planned] = plan([mail], BatchFacts(tickets=TICKET_42, tickets_by_message_id={OUR_ANSWER: 42}))
    assert planned == Reject("loop")
    assert unattached_bounce_flag(mail) == (
        "bounce (5.1.1) of <someone@else.example>: no ticket of ours sent that mail, so it is handled as decided"
    )
    assert "a mail it does not name" in unattached_bounce_flag(bounce(classified("a", "2"), None, None))
    assert unattached_bounce_flag(classified("a", "3")) is None


def test_a_bounce_naming_a_ticket_that_is_gone_is_not_a_note():
    mail = bounce(classified("a", "1", create_user_from_local_part=True), OUR_ANSWER)
    [planned] = plan([mail], BatchFacts(tickets_by_message_id={OUR_ANSWER: 42}))
    assert isinstance(planned, OpenTicket)
