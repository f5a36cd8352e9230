//! The ISO tables an order is checked against: ISO 4217 currencies with their minor-unit
//! exponents (how many decimals a price may have) and ISO 3166-1 alpha-2 countries.
//! Both are plain constant tables: a lookup is a binary search or one bit test, with no
//! allocation, because every submitted order goes through them.

/// An ISO 4217 currency and the number of decimals of its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// The three-letter code, e.g. `EUR`.
    pub code: &'static str,
    /// Decimals of the minor unit: 2 for EUR (cents), 0 for JPY, 3 for KWD.
    pub exponent: u8,
}

/// Active ISO 4217 currencies with a minor unit, sorted by code (binary-searched).
/// Funds codes that are traded (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW) are
/// included; precious metals, SDRs and test codes (XAU, XDR, XTS, XXX, ...) are not,
/// because they have no minor unit an order could be priced in.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2),
    ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2),
    ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0),
    ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2),
    ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2),
    ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2),
    ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2),
    ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2),
    ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2),
    ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2),
    ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2), ("ZWL", 2),
];

/// Looks up an ISO 4217 code (exact, upper case).
pub fn currency(code: &str) -> Option<Currency> {
    CURRENCIES
        .binary_search_by(|(c, _)| (*c).cmp(code))
        .ok()
        .map(|i| Currency {
            code: CURRENCIES[i].0,
            exponent: CURRENCIES[i].1,
        })
}

/// Every officially assigned ISO 3166-1 alpha-2 code, concatenated.
const COUNTRIES: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ \
EC EE EG EH ER ES ET \
FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT \
JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ \
OM \
PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA \
RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ \
UA UG UM US UY UZ \
VA VC VE VG VI VN VU \
WF WS \
YE YT \
ZA ZM ZW";

/// One bit per two-letter combination (26 * 26), built at compile time from [`COUNTRIES`].
const COUNTRY_BITS: [u32; 26] = {
    let bytes = COUNTRIES.as_bytes();
    let mut bits = [0u32; 26];
    let mut i = 0;
    while i + 1 < bytes.len() {
        let (a, b) = (bytes[i], bytes[i + 1]);
        if a.is_ascii_uppercase() && b.is_ascii_uppercase() {
            bits[(a - b'A') as usize] |= 1 << (b - b'A');
            i += 3;
        } else {
            i += 1;
        }
    }
    bits
};

/// True for an assigned ISO 3166-1 alpha-2 code (exact, upper case).
pub fn is_country(code: &str) -> bool {
    match code.as_bytes() {
        [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => {
            COUNTRY_BITS[(a - b'A') as usize] & (1 << (b - b'A')) != 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The currency table is sorted (binary search relies on it) and gives exponents.
    #[test]
    fn currencies_are_sorted_and_carry_exponents() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(currency("EUR").map(|c| c.exponent), Some(2));
        assert_eq!(currency("JPY").map(|c| c.exponent), Some(0));
        assert_eq!(currency("KWD").map(|c| c.exponent), Some(3));
        assert_eq!(currency("CLF").map(|c| c.exponent), Some(4));
        for bad in ["eur", "XXX", "XAU", "EU", "EURO", ""] {
            assert!(currency(bad).is_none(), "{bad}");
        }
    }

    /// All 249 assigned country codes are known; anything else is not.
    #[test]
    fn countries_table_has_every_assigned_code() {
        let listed: Vec<&str> = COUNTRIES.split_whitespace().collect();
        assert_eq!(listed.len(), 249);
        assert!(listed.iter().all(|c| is_country(c)));
        let known = (b'A'..=b'Z')
            .flat_map(|a| (b'A'..=b'Z').map(move |b| [a, b]))
            .filter(|pair| is_country(std::str::from_utf8(pair).unwrap_or("")))
            .count();
        assert_eq!(known, 249);
        for bad in ["de", "XX", "UK", "D", "DEU", "", "Dé"] {
            assert!(!is_country(bad), "{bad}");
        }
    }
}
