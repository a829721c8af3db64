"""The fault drills (``bench/fault_drills.py``): their checker on made-up data, then the
quick subset on the real stack, which must lose and duplicate nothing."""

from __future__ import annotations

import pytest

from bench.fault_drills import (
    STEADY,
    DrillConfig,
    InjectedMail,
    TicketStep,
    check_mails,
    drill_outcomes,
    drill_plan,
    outcome_table,
    recovery_seconds,
)


def mail(n: int, drill: str = STEADY, at: float = 0.0) -> InjectedMail:
    return InjectedMail(f"<{n}@drills.test>", f"drill {n}", drill, at)


def test_a_lost_and_a_duplicated_mail_are_found():
    injected = [mail(1), mail(2), mail(3), mail(4)]
    steps = [
        TicketStep("<1@drills.test>", 101),
        TicketStep("<2@drills.test>", 102),
        TicketStep("<2@drills.test>", 102),  # mail 2 twice on its ticket
        TicketStep("<4@drills.test>", 104),
    ]
    ledger = ["<1@drills.test>", "<2@drills.test>", "<4@drills.test>"]
    tickets = {101: "drill 1", 102: "drill 2", 104: "drill 4"}
    check = check_mails(injected, steps, ledger, tickets)
    assert check.lost == ("<3@drills.test>",)
    assert check.duplicated == ("<2@drills.test>",)
    assert (check.mails_in, check.tickets_out, check.steps_out) == (4, 3, 4)


def test_a_second_ticket_or_ledger_row_is_a_duplicate_even_with_one_step():
    injected = [mail(1), mail(2), mail(3)]
    steps = [TicketStep(f"<{n}@drills.test>", 100 + n) for n in (1, 2, 3)]
    ledger = ["<1@drills.test>", "<2@drills.test>", "<3@drills.test>", "<3@drills.test>"]
    # Mail 2 also opened ticket 202, which holds no step.
    tickets = {101: "drill 1", 102: "drill 2", 103: "drill 3", 202: "drill 2"}
    check = check_mails(injected, steps, ledger, tickets)
    assert check.lost == ()
    assert check.duplicated == ("<2@drills.test>", "<3@drills.test>")
    assert check.tickets_out == 4


def test_a_clean_run_has_nothing_lost_or_duplicated():
    injected = [mail(n) for n in range(5)]
    steps = [TicketStep(f"<{n}@drills.test>", 100 + n) for n in range(5)]
    check = check_mails(injected, steps, [m.message_id for m in injected], {100 + n: f"drill {n}" for n in range(5)})
    assert (check.lost, check.duplicated, check.tickets_out, check.steps_out) == ((), (), 5, 5)


def test_recovery_is_measured_from_the_fault_to_the_last_held_up_mail():
    # (injected_at, seen_at); anything slower than 4 s end to end was held up.
    mails = [(10.0, 12.0), (11.0, 25.0), (12.0, 24.0), (20.0, 30.0), (26.0, 28.0)]
    assert recovery_seconds(10.5, mails, threshold=4.0) == pytest.approx(30.0 - 10.5)
    assert recovery_seconds(10.5, [(10.0, 12.0), (11.0, 13.0)], threshold=4.0) == 0.0
    assert recovery_seconds(10.5, [(10.0, 12.0), (11.0, None)], threshold=4.0) is None


def test_each_drill_is_checked_on_its_own_mails_and_the_table_shows_it():
    plan = drill_plan(quick=True)
    kill = plan[1].name
    injected = [mail(1, STEADY, 0.0), mail(2, STEADY, 1.0), mail(3, kill, 10.0), mail(4, kill, 11.0)]
    steps = [
        TicketStep("<1@drills.test>", 1, 3.0),
        TicketStep("<2@drills.test>", 2, 4.0),
        TicketStep("<3@drills.test>", 3, 30.0),
        TicketStep("<3@drills.test>", 3, 30.0),
    ]
    outcomes, total = drill_outcomes(
        plan, injected, steps, [m.message_id for m in injected], {}, {STEADY: 0.0, kill: 10.5}, {}
    )
    by_name = {o.drill: o for o in outcomes}
    assert by_name[STEADY].check.lost == by_name[STEADY].check.duplicated == ()
    assert by_name[kill].check.lost == ("<4@drills.test>",)
    assert by_name[kill].check.duplicated == ("<3@drills.test>",)
    assert by_name[kill].recovery is None  # mail 4 never arrived
    assert (len(total.lost), len(total.duplicated)) == (1, 1)
    table = outcome_table(outcomes, total)
    assert f"| {kill} | 2 | 1 | 2 | 1 | 1 | never |" in table


def test_the_quick_subset_covers_kill_9_of_each_kind_and_adding_and_removing_a_fetcher():
    faults = {(d.fault, d.target) for d in drill_plan(quick=True)}
    assert {("kill", "fetcher"), ("kill", "classifier"), ("kill", "ticketer")} <= faults
    assert {("add", "fetcher"), ("remove", "fetcher")} <= faults
    assert {("stack", "kafka"), ("stack", "postgres"), ("stack", "dovecot")} <= {
        (d.fault, d.target) for d in drill_plan(quick=False)
    }


@pytest.mark.stack
def test_quick_drills_lose_and_duplicate_no_mail(stack, tmp_path):
    from bench.fault_drills import run_drills

    result = run_drills(DrillConfig.for_mode(quick=True, log_dir=tmp_path))
    print(result.table, *result.notes, sep="\n")
    assert result.total.mails_in >= 500
    assert result.total.lost == (), f"lost: {result.total.lost[:10]}\n{result.table}"
    assert result.total.duplicated == (), f"duplicated: {result.total.duplicated[:10]}\n{result.table}"
    assert result.mail_sessions >= 30, "Dovecot logged no polls of the drill's mailboxes"
    assert result.overlapping_sessions == 0, "\n".join(result.notes)
    # Every drill recovered: the last held-up mail of each arrived (generous: a session
    # timeout plus poll interval is the design, a rebalance on a loaded machine adds more).
    for outcome in result.outcomes[1:]:
        assert outcome.recovery is not None and outcome.recovery < 120, result.table


def test_held_up_means_slower_than_95_percent_of_the_steady_mails_plus_a_margin():
    from bench.fault_drills import HELD_UP_MARGIN_SECONDS, held_up_threshold

    steady = [1.0] * 95 + [30.0] * 5  # five slow mails while the groups settled after the start
    assert held_up_threshold(steady) == pytest.approx(30.0 + HELD_UP_MARGIN_SECONDS)
    assert held_up_threshold([1.0] * 96 + [30.0] * 4) == pytest.approx(1.0 + HELD_UP_MARGIN_SECONDS)
