"""Money: integer minor units plus an ISO 4217 currency, never floats.

Arithmetic refuses to mix currencies. Scaling by an exact ratio (proration, percentages)
rounds once, half to even, so a line is never off by more than half a minor unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import MAX_PREC, Context, Decimal, InvalidOperation
from fractions import Fraction

from ledger.errors import CurrencyMismatch, InvalidMoney, UnknownCurrency

# Exponents that differ from the usual 2 (ISO 4217, list of active codes).
_SPECIAL_EXPONENTS = {
    **dict.fromkeys(
        "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0
    ),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    **dict.fromkeys("CLF UYW".split(), 4),
}
_ACTIVE_CODES = """
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN
BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP
ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR
ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA
MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC
SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND
VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
""".split()
EXPONENTS: dict[str, int] = {code: _SPECIAL_EXPONENTS.get(code, 2) for code in _ACTIVE_CODES}

# Shifting the decimal point must never round: the default context keeps only 28 digits.
_EXACT = Context(prec=MAX_PREC)
MAX_MAJOR_DIGITS = 40


def exponent(currency: str) -> int:
    """Number of decimal places of ``currency``'s minor unit (JPY 0, EUR 2, BHD 3)."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(f"{currency!r} is not an active ISO 4217 currency code") from None


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (cents, yen, fils) of one currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise InvalidMoney(f"amount must be an integer of minor units, got {self.amount!r}")
        exponent(self.currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def of(cls, major: str | int | Decimal, currency: str) -> Money:
        """Money from major units, exactly: ``Money.of("12.34", "EUR")`` is 1234 cents.

        More decimals than the currency has is an error, never a silent rounding.
        """
        try:
            value = Decimal(major)
        except InvalidOperation:
            raise InvalidMoney(f"{major!r} is not a number") from None
        if not value.is_finite():
            raise InvalidMoney(f"{major!r} is not a finite amount")
        if value.adjusted() >= MAX_MAJOR_DIGITS:
            # Refused before scaling: a huge exponent would take ages to expand.
            raise InvalidMoney(f"{major!r} is too large an amount")
        minor = value.scaleb(exponent(currency), _EXACT)
        if minor != minor.to_integral_value():
            raise InvalidMoney(
                f"{major} has more decimals than {currency} allows ({exponent(currency)})"
            )
        return cls(int(minor), currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def __bool__(self) -> bool:
        return self.amount != 0

    def scaled(self, ratio: Fraction) -> Money:
        """This amount times an exact ratio, rounded once, half to even."""
        return Money(round(self.amount * ratio), self.currency)

    def to_decimal(self) -> Decimal:
        """The amount in major units, exactly."""
        return Decimal(self.amount).scaleb(-exponent(self.currency), _EXACT)

    def __str__(self) -> str:
        # Integer arithmetic: this formats every amount of a history rebuild.
        places = exponent(self.currency)
        major, minor = divmod(abs(self.amount), 10**places)
        sign = "-" if self.amount < 0 else ""
        decimals = f".{minor:0{places}d}" if places else ""
        return f"{sign}{major}{decimals} {self.currency}"
