"""Revenue figures over a date range (MRR and its movements, customers, trials and
payments), read from the revenue projection's tables.

Levels (MRR, paying customers) at a day are sums of the daily flows up to that day; the
movements of a range are sums of its days. docs/metrics.md gives every formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from projections.database import Database
from projections.payment_flows import FLOWS
from projections.revenue import DAY_COUNTS, MOVEMENTS, NET_MRR, PAYING_CHANGE
from projections.values import read_day, read_int

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
    churned_customers: int
    customers: int  # registered by the end
    trials_started: int
    trials_converted: int
    trials_not_converted: int
    collected: int  # minor units, by successful payments
    refunded: int  # minor units, by successful refunds
    failed_payments: int
    recovered_payments: int  # payments that succeeded on a dunning retry
    recovered: int  # minor units collected by those
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
        return _ratio(self.churned_customers, self.paying_customers_at_start)

    @property
    def monthly_customer_churn_rate(self) -> Fraction | None:
        rate = self.customer_churn_rate
        return None if rate is None else rate * DAYS_PER_MONTH / self.days

    @property
    def revenue_churn_rate(self) -> Fraction | None:
        return _ratio(self.movements.churn + self.movements.contraction, self.mrr_at_start)

    @property
    def net_revenue_retention(self) -> Fraction | None:
        m = self.movements
        return _ratio(self.mrr_at_start + m.expansion - m.contraction - m.churn, self.mrr_at_start)

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
        )
        for row in rows
    ]
