"""ISO 4217 currencies and their minor units, shared by the payment and invoicing tasks."""

from __future__ import annotations

from decimal import Decimal

#: The active ISO 4217 currency codes, by the exponent of their minor unit.
_CODES_BY_EXPONENT = {
    2: """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
          CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
          GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL
          MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK
          PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS
          TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG""",
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
#: Each active ISO 4217 code and the exponent of its minor unit (USD 2, JPY 0, KWD 3).
CURRENCY_EXPONENTS: dict[str, int] = {
    code: exponent for exponent, codes in _CODES_BY_EXPONENT.items() for code in codes.split()
}


def minor_units(amount: float, currency: str) -> int:
    """``amount`` in the currency's minor unit (19.99 USD -> 1999); ValueError on too many decimals."""
    exponent = CURRENCY_EXPONENTS[currency]
    scaled = Decimal(str(amount)).scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} has {exponent} decimal places; {amount} has more")
    return int(scaled)
