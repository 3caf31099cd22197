"""Reporting overage to Stripe, exactly once: for each user, metric and billing
period that has ended, the overage of the plan in force at its end is sent
(a billing meter event where the metric names a meter, else an invoice item on
the customer) under an idempotency key of the user, metric and period, and
recorded as UsageReport.Reported with what Stripe answered. A second run, or a
run after a crash, skips what is recorded and repeats an unrecorded call under
the same key, which Stripe answers without acting twice."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from ledger.application import Ledger
from ledger.domain.catalog import Catalog
from ledger.domain.usage_report import UsageReport, report_key
from ledger.stripe.gateway import StripeError, StripeGateway

# For the crash test: exit (as a kill would) after reporting this many users.
EXIT_AFTER_USERS = "LEDGER_TEST_USAGE_REPORT_EXIT_AFTER"


@dataclass(frozen=True)
class Line:
    """One row of the report: a user's usage of a metric in an ended period."""

    user_id: str
    metric: str
    period_start: int
    period_end: int
    used: int
    included: int
    overage: int
    amount: int
    currency: str
    stripe_customer_id: str | None
    status: str = "pending"  # then: reported, already_reported, dry_run, nothing_due,
    # no_customer, failed: <code>


class UsageReporter:
    def __init__(self, ledger: Ledger, catalog: Catalog, gateway: StripeGateway | None) -> None:
        self._ledger = ledger
        self._catalog = catalog
        self._gateway = gateway

    def lines(self, totals: Iterable[Mapping[str, Any]]) -> list[Line]:
        """The report's rows, from the usage_totals of ended periods."""
        out = []
        for row in totals:
            metric = self._catalog.metric(row["metric"])
            if metric is None:
                continue
            plan_id = row["plan_id"] or self._catalog.free_plan.id
            overage, amount = metric.overage(row["total"], plan_id)
            out.append(
                Line(
                    user_id=row["user_id"],
                    metric=metric.name,
                    period_start=row["period_start"],
                    period_end=row["period_end"],
                    used=row["total"],
                    included=metric.allowance(plan_id).included,
                    overage=overage,
                    amount=amount,
                    currency=metric.currency,
                    stripe_customer_id=row["stripe_customer_id"],
                )
            )
        return out

    def report(
        self,
        lines: list[Line],
        *,
        dry_run: bool = False,
        progress: Callable[[Line], None] | None = None,
    ) -> Iterator[Line]:
        """Report each line; yields it with its status. Users one after another."""
        exit_after = int(os.environ.get(EXIT_AFTER_USERS, "0"))
        users_done: list[str] = []
        for line in lines:
            if users_done and line.user_id != users_done[-1] and len(users_done) == exit_after:
                os._exit(3)  # the crash test's kill, between two users
            if not users_done or users_done[-1] != line.user_id:
                users_done.append(line.user_id)
            done = self._one(line, dry_run)
            if progress:
                progress(done)
            yield done

    def _one(self, line: Line, dry_run: bool) -> Line:
        if line.overage <= 0:
            return _with(line, "nothing_due")
        report_id = UsageReport.create_id(line.user_id, line.metric, line.period_start)
        try:
            self._ledger.repository.get(report_id)
            return _with(line, "already_reported")
        except AggregateNotFoundError:
            pass
        if line.stripe_customer_id is None:
            return _with(line, "no_customer")
        if dry_run:
            return _with(line, "dry_run")
        if self._gateway is None:
            return _with(line, "failed: stripe_not_configured")
        key = report_key(line.user_id, line.metric, line.period_start)
        metric = self._catalog.metric(line.metric)
        assert metric is not None
        try:
            if metric.stripe_meter_event:
                stripe_object = "billing.meter_event"
                stripe_id = self._gateway.report_meter_event(
                    metric.stripe_meter_event,
                    line.stripe_customer_id,
                    line.overage,
                    line.period_end - 1,
                    key,
                )
            else:
                stripe_object = "invoiceitem"
                stripe_id = self._gateway.create_invoice_item(
                    line.stripe_customer_id,
                    line.amount,
                    line.currency,
                    f"{line.metric}: {line.overage} {metric.unit} over {line.included} included",
                    {"user_id": line.user_id, "metric": line.metric, "usage_report": key},
                    key,
                )
        except StripeError as exc:
            return _with(line, f"failed: {exc.code}")
        try:
            self._save(line, stripe_object, stripe_id)
        except IntegrityError:  # another run recorded it first (same key: Stripe acted once)
            return _with(line, "already_reported")
        return _with(line, "reported")

    def _save(self, line: Line, stripe_object: str, stripe_id: str) -> None:
        self._ledger.save(
            UsageReport(
                user_id=line.user_id,
                metric=line.metric,
                period_start=line.period_start,
                period_end=line.period_end,
                used=line.used,
                included=line.included,
                overage=line.overage,
                amount=line.amount,
                currency=line.currency,
                stripe_customer_id=line.stripe_customer_id,
                stripe_object=stripe_object,
                stripe_id=stripe_id,
            )
        )


def _with(line: Line, status: str) -> Line:
    return replace(line, status=status)
