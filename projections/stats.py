"""Revenue figures over a date range (MRR and its movements, customers, trials and
payments), read from the revenue projection's tables.

Levels (MRR, paying customers) at a day are sums of the daily flows up to that day; the
movements of a range are sums of its days. Churn rates and NRR are cohort measures: over
the customers paying at the range's start (``Cohort``), from each one's MRR at the start
and at the end (``revenue_changes``). docs/metrics.md gives every formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from typing import Any

from projections.database import Database
from projections.payment_flows import FLOWS
from projections.revenue import DAY_COUNTS, MOVEMENTS, NET_MRR, PAYING_CHANGE
from projections.values import instant, read_day, read_int

DAYS_PER_MONTH = Fraction(1461, 48)  # 365.25 / 12
DEFAULT_DAYS = 30


class NoRevenueData(LookupError):
    pass


@dataclass(frozen=True)
class Movements:
    new: int
    expansion: int
    contraction: int
    churn: int
    reactivation: int

    @property
    def net(self) -> int:
        """The change of MRR they make: new + expansion - contraction - churn + reactivation."""
        return self.new + self.expansion - self.contraction - self.churn + self.reactivation

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in MOVEMENTS}


@dataclass(frozen=True)
class Cohort:
    """The customers paying at the start of a range (MRR above 0 at the end of the day
    before it), and their MRR at its end: what churn rates and NRR are measured on."""

    customers: int
    mrr_at_start: int  # equals ``Figures.mrr_at_start``: only paying customers have MRR
    mrr_at_end: int  # theirs only: customers who started paying in the range are left out
    lost_mrr: int  # the sum over them of max(0, MRR at start - MRR at end)
    churned_customers: int  # those whose MRR at the end is 0

    @property
    def expansion_mrr(self) -> int:
        """The sum over them of max(0, MRR at end - MRR at start)."""
        return self.mrr_at_end - self.mrr_at_start + self.lost_mrr

    def as_json(self) -> dict[str, int]:
        return {
            "customers": self.customers,
            "mrr_at_start": self.mrr_at_start,
            "mrr_at_end": self.mrr_at_end,
            "lost_mrr": self.lost_mrr,
            "expansion_mrr": self.expansion_mrr,
            "churned_customers": self.churned_customers,
        }


@dataclass(frozen=True)
class PlanSubscribers:
    plan_code: str
    status: str
    subscribers: int
    mrr: int


@dataclass(frozen=True)
class Figures:
    """A currency's figures over the days ``start`` to ``end``, both included."""

    currency: str
    start: date
    end: date
    mrr_at_start: int
    movements: Movements
    paying_customers_at_start: int
    new_customers: int
    reactivated_customers: int
    churned_customers: int  # churn movements in the range (the paying customers' bridge)
    customers: int  # registered by the end
    trials_started: int
    trials_converted: int
    trials_not_converted: int
    collected: int  # minor units, by successful payments
    refunded: int  # minor units, by successful refunds
    failed_payments: int
    recovered_payments: int  # payments that succeeded on a dunning retry
    recovered: int  # minor units collected by those
    cohort: Cohort
    subscribers: tuple[PlanSubscribers, ...] = field(default=())

    @property
    def mrr(self) -> int:
        """MRR at the end of the range."""
        return self.mrr_at_start + self.movements.net

    @property
    def arr(self) -> int:
        return 12 * self.mrr

    @property
    def paying_customers(self) -> int:
        """Customers with MRR above zero at the end of the range."""
        return (
            self.paying_customers_at_start
            + self.new_customers
            + self.reactivated_customers
            - self.churned_customers
        )

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def customer_churn_rate(self) -> Fraction | None:
        """The share of the cohort not paying at the end, in [0, 1]."""
        return _ratio(self.cohort.churned_customers, self.cohort.customers)

    @property
    def monthly_customer_churn_rate(self) -> Fraction | None:
        rate = self.customer_churn_rate
        return None if rate is None else rate * DAYS_PER_MONTH / self.days

    @property
    def revenue_churn_rate(self) -> Fraction | None:
        """Gross: the share of the cohort's MRR lost by the end, in [0, 1]."""
        return _ratio(self.cohort.lost_mrr, self.cohort.mrr_at_start)

    @property
    def net_revenue_retention(self) -> Fraction | None:
        """The cohort's MRR at the end over its MRR at the start, 0 or more."""
        return _ratio(self.cohort.mrr_at_end, self.cohort.mrr_at_start)

    @property
    def arpu(self) -> Fraction | None:
        return _ratio(self.mrr, self.paying_customers)

    @property
    def ltv(self) -> Fraction | None:
        """ARPU / monthly customer churn rate; undefined (not infinite) without churn."""
        arpu, churn = self.arpu, self.monthly_customer_churn_rate
        if arpu is None or not churn:
            return None
        return arpu / churn

    @property
    def trial_conversion_rate(self) -> Fraction | None:
        return _ratio(self.trials_converted, self.trials_converted + self.trials_not_converted)

    def as_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "mrr_at_start": self.mrr_at_start,
            "mrr": self.mrr,
            "arr": self.arr,
            "mrr_movements": self.movements.as_json(),
            "paying_customers_at_start": self.paying_customers_at_start,
            "paying_customers": self.paying_customers,
            "new_customers": self.new_customers,
            "reactivated_customers": self.reactivated_customers,
            "churned_customers": self.churned_customers,
            "customers": self.customers,
            "cohort": self.cohort.as_json(),
            "arpu": _minor(self.arpu),
            "ltv": _minor(self.ltv),
            "customer_churn_rate": _rate(self.customer_churn_rate),
            "monthly_customer_churn_rate": _rate(self.monthly_customer_churn_rate),
            "revenue_churn_rate": _rate(self.revenue_churn_rate),
            "net_revenue_retention": _rate(self.net_revenue_retention),
            "trials_started": self.trials_started,
            "trials_converted": self.trials_converted,
            "trials_not_converted": self.trials_not_converted,
            "trial_conversion_rate": _rate(self.trial_conversion_rate),
            **{flow: getattr(self, flow) for flow in FLOWS},
            "subscribers": [
                {
                    "plan": s.plan_code,
                    "status": s.status,
                    "subscribers": s.subscribers,
                    "mrr": s.mrr,
                }
                for s in self.subscribers
            ],
        }


def _ratio(numerator: int, denominator: int) -> Fraction | None:
    return Fraction(numerator, denominator) if denominator else None


def _minor(value: Fraction | None) -> int | None:
    """An amount in minor units, rounded half to even."""
    return None if value is None else round(value)


def _rate(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 6)


def currencies(db: Database) -> list[str]:
    return [row[0] for row in db.query("SELECT DISTINCT currency FROM revenue_days ORDER BY 1")]


def last_day(db: Database) -> date:
    """The last day with revenue events, in any currency."""
    (last,) = db.query("SELECT MAX(day) FROM revenue_days")[0]
    if last is None:
        raise NoRevenueData("no revenue events have been projected yet")
    return read_day(last)


def default_range(db: Database) -> tuple[date, date]:
    """The last ``DEFAULT_DAYS`` days up to the last day with revenue events."""
    end = last_day(db)
    return end - timedelta(days=DEFAULT_DAYS - 1), end


def _midnight(day: date) -> str:
    """The instant ``day`` begins, as ``revenue_changes.at`` is compared: an event is on
    the UTC day of its timestamp, as ``revenue_days`` books it."""
    return instant(datetime.combine(day, time(), UTC))


def cohort(db: Database, currency: str, start: date, end: date) -> Cohort:
    """The customers paying at the start of ``start``, and their MRR at the end of ``end``:
    each customer's MRR at an instant is the sum of their changes before it."""
    (row,) = db.query(
        "SELECT COUNT(*), SUM(at_start), SUM(at_end), "
        "SUM(CASE WHEN at_end < at_start THEN at_start - at_end ELSE 0 END), "
        "SUM(CASE WHEN at_end = 0 THEN 1 ELSE 0 END) "
        "FROM (SELECT SUM(CASE WHEN at < ? THEN delta ELSE 0 END) AS at_start, "
        "SUM(delta) AS at_end FROM revenue_changes WHERE currency = ? AND at < ? "
        "GROUP BY customer_id) AS customer_mrr WHERE at_start > 0",
        (_midnight(start), currency, _midnight(end + timedelta(days=1))),
    )
    return Cohort(*map(read_int, row))


def figures(db: Database, currency: str, start: date, end: date) -> Figures:
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    (before,) = db.query(
        f"SELECT SUM({NET_MRR}), SUM({PAYING_CHANGE}), SUM(registered_customers) "
        "FROM revenue_days WHERE currency = ? AND day < ?",
        (currency, start.isoformat()),
    )
    (during,) = db.query(
        f"SELECT {', '.join(f'SUM({column})' for column in DAY_COUNTS)} FROM revenue_days "
        "WHERE currency = ? AND day >= ? AND day <= ?",
        (currency, start.isoformat(), end.isoformat()),
    )
    sums = dict(zip(DAY_COUNTS, map(read_int, during), strict=True))
    plans = db.query(
        "SELECT plan_code, status, SUM(subscribers_change), SUM(mrr_change) "
        "FROM revenue_plan_days WHERE currency = ? AND day <= ? "
        "GROUP BY plan_code, status ORDER BY plan_code, status",
        (currency, end.isoformat()),
    )
    return Figures(
        currency=currency,
        start=start,
        end=end,
        mrr_at_start=read_int(before[0]),
        movements=Movements(*(sums[f"{name}_mrr"] for name in MOVEMENTS)),
        paying_customers_at_start=read_int(before[1]),
        new_customers=sums["new_customers"],
        reactivated_customers=sums["reactivated_customers"],
        churned_customers=sums["churned_customers"],
        customers=read_int(before[2]) + sums["registered_customers"],
        trials_started=sums["trials_started"],
        trials_converted=sums["trials_converted"],
        trials_not_converted=sums["trials_not_converted"],
        collected=sums["collected"],
        refunded=sums["refunded"],
        failed_payments=sums["failed_payments"],
        recovered_payments=sums["recovered_payments"],
        recovered=sums["recovered"],
        cohort=cohort(db, currency, start, end),
        subscribers=tuple(
            PlanSubscribers(plan, status, read_int(count), read_int(mrr))
            for plan, status, count, mrr in plans
            if read_int(count)
        ),
    )


def months(db: Database, currency: str, start: date, end: date) -> list[Figures]:
    """The figures of each calendar month that overlaps the range, whole months."""
    rows = db.query(
        "SELECT month, first_day, last_day, mrr_at_start, "
        f"{', '.join(f'{name}_mrr' for name in MOVEMENTS)}, paying_customers_at_start, "
        "new_customers, reactivated_customers, churned_customers, customers_at_end, "
        f"trials_started, trials_converted, trials_not_converted, {', '.join(FLOWS)} "
        "FROM revenue_monthly WHERE currency = ? AND month >= ? AND month <= ? ORDER BY month",
        (currency, start.isoformat()[:7], end.isoformat()[:7]),
    )
    return [
        Figures(
            currency=currency,
            start=read_day(row[1]),
            end=read_day(row[2]),
            mrr_at_start=read_int(row[3]),
            movements=Movements(*(read_int(value) for value in row[4:9])),
            paying_customers_at_start=read_int(row[9]),
            new_customers=read_int(row[10]),
            reactivated_customers=read_int(row[11]),
            churned_customers=read_int(row[12]),
            customers=read_int(row[13]),
            trials_started=read_int(row[14]),
            trials_converted=read_int(row[15]),
            trials_not_converted=read_int(row[16]),
            collected=read_int(row[17]),
            refunded=read_int(row[18]),
            failed_payments=read_int(row[19]),
            recovered_payments=read_int(row[20]),
            recovered=read_int(row[21]),
            cohort=cohort(db, currency, read_day(row[1]), read_day(row[2])),
        )
        for row in rows
    ]
