//! Synthetic but *valid-looking* personal data for the demo upstream.
//!
//! Masking detectors check structure (Luhn for cards, SSA rules for SSNs, mod-97 for
//! IBANs), so fake data that fails those checks would make masking tests pass for the
//! wrong reason. Every value here is valid by those rules, and the tests below prove it.
//! Card numbers are the public test numbers of card networks; emails use reserved
//! example domains; phone numbers are from fictional (555 / Ofcom drama) ranges.

use serde::Serialize;

/// One row of the demo `customers` table.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Customer {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub card: String,
    pub ssn: String,
    pub iban: String,
    pub notes: String,
}

const NAMES: [&str; 20] = [
    "Alice Martin",
    "Bob Chen",
    "Carla Diaz",
    "David Okafor",
    "Emma Schulz",
    "Farid Haddad",
    "Grace Kim",
    "Hugo Laurent",
    "Ines Costa",
    "Jonas Berg",
    "Keiko Tanaka",
    "Liam Walsh",
    "Maya Patel",
    "Noah Fischer",
    "Olivia Rossi",
    "Pavel Novak",
    "Quinn Murphy",
    "Rosa Alvarez",
    "Samir Nasser",
    "Tara Singh",
];

/// Public test card numbers (all pass Luhn), written the way people write them.
const CARDS: [&str; 20] = [
    "4111 1111 1111 1111",
    "5555555555554444",
    "3782-822463-10005",
    "6011 1111 1111 1117",
    "4012-8888-8888-1881",
    "5105 1051 0510 5100",
    "371449635398431",
    "6011000990139424",
    "3530 1113 3330 0000",
    "4242424242424242",
    "2223 0031 2200 3222",
    "5200-8282-8282-8210",
    "3566 0020 2036 0505",
    "30569309025904",
    "4000 0566 5566 5556",
    "6200000000000005",
    "3852 0000 0232 37",
    "4000-0025-0000-3155",
    "4000000000003220",
    "5454 5454 5454 5454",
];

/// Well-known valid example IBANs; the remaining rows get generated German IBANs.
const IBANS: [&str; 5] = [
    "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "ES91 2100 0418 4502 0005 1332",
];

/// The 20 seed customers. Deterministic, so tests can name expected values.
pub fn seed_customers() -> Vec<Customer> {
    NAMES
        .iter()
        .zip(CARDS.iter())
        .enumerate()
        .map(|(i, (name, card))| {
            let n = i as i64 + 1;
            let (first, last) = name.split_once(' ').unwrap_or((name, "x"));
            let email = format!(
                "{}.{}@{}",
                first.to_lowercase(),
                last.to_lowercase(),
                if i % 3 == 2 { "example.org" } else { "example.com" }
            );
            Customer {
                id: n,
                name: (*name).to_string(),
                email,
                phone: phone(i),
                card: (*card).to_string(),
                ssn: ssn(i),
                iban: IBANS.get(i).map(|s| s.to_string()).unwrap_or_else(|| generated_iban(i)),
                notes: note(i, first),
            }
        })
        .collect()
}

fn phone(i: usize) -> String {
    match i % 4 {
        0 => format!("+1 415-555-01{:02}", i),
        1 => format!("(415) 555-01{:02}", i),
        2 => format!("415.555.01{:02}", i),
        _ => format!("+44 20 7946 0{:03}", 100 + i),
    }
}

/// SSNs valid under SSA rules: area 001-899 but not 666, group 01-99, serial 0001-9999.
fn ssn(i: usize) -> String {
    let area = 123 + i * 23;
    let group = 10 + i * 4;
    let serial = 1000 + i * 379;
    format!("{area:03}-{group:02}-{serial:04}")
}

fn generated_iban(i: usize) -> String {
    let bban = format!("{:08}{:010}", 37040044 + i * 7, 532013000 + i * 1_000_003);
    iban_from_bban("DE", &bban).unwrap_or_default()
}

fn note(i: usize, first: &str) -> String {
    match i % 5 {
        0 => format!("VIP. Call back on (415) 555-01{:02} before 5pm.", 50 + i),
        1 => format!("Asked to use backup email {}.alt@example.net for invoices.", first.to_lowercase()),
        2 => "Disputed a charge on card 4111-1111-1111-1111 in March.".to_string(),
        3 => format!("Verified identity with SSN {} on file.", ssn(i + 1)),
        _ => "Prefers paper statements.".to_string(),
    }
}

/// True if `s` (digits, spaces and dashes) is 12-19 digits that pass the Luhn check.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u32> = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_digit(10))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(pos, &d)| {
            if pos % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// True if `s` is an `AAA-GG-SSSS` SSN that the SSA could have issued.
pub fn ssn_valid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [area, group, serial] = parts.as_slice() else {
        return false;
    };
    let num = |p: &str, len: usize| -> Option<u32> {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
    };
    match (num(area, 3), num(group, 2), num(serial, 4)) {
        (Some(a), Some(g), Some(s)) => a != 0 && a != 666 && a < 900 && g != 0 && s != 0,
        _ => false,
    }
}

/// Remainder of the IBAN number (country code and check digits moved to the end,
/// letters as 10..35) modulo 97, computed digit by digit to avoid big integers.
fn iban_mod97(rearranged: &str) -> Option<u32> {
    let mut rem: u32 = 0;
    for c in rearranged.chars() {
        let v = c.to_digit(36)?;
        rem = if v >= 10 { (rem * 100 + v) % 97 } else { (rem * 10 + v) % 97 };
    }
    Some(rem)
}

/// True if `s` (spaces allowed) is an IBAN with correct mod-97 check digits.
pub fn iban_valid(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| *c != ' ').collect();
    if !(15..=34).contains(&compact.len()) || !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    iban_mod97(&format!("{tail}{head}").to_ascii_uppercase()) == Some(1)
}

/// Builds a valid IBAN from a country code and a BBAN by computing the check digits.
pub fn iban_from_bban(country: &str, bban: &str) -> Option<String> {
    let rem = iban_mod97(&format!("{bban}{country}00").to_ascii_uppercase())?;
    Some(format!("{country}{:02}{bban}", 98 - rem))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_card_passes_luhn() {
        for c in seed_customers() {
            assert!(luhn_valid(&c.card), "{} fails Luhn", c.card);
        }
        assert!(!luhn_valid("4111 1111 1111 1112"));
    }

    #[test]
    fn every_seed_ssn_follows_ssa_rules() {
        for c in seed_customers() {
            assert!(ssn_valid(&c.ssn), "{} invalid", c.ssn);
        }
        assert!(!ssn_valid("666-12-3456") && !ssn_valid("123-00-4567") && !ssn_valid("912-12-3456"));
    }

    #[test]
    fn every_seed_iban_has_valid_check_digits() {
        for c in seed_customers() {
            assert!(iban_valid(&c.iban), "{} invalid", c.iban);
        }
        assert!(!iban_valid("DE88370400440532013000"));
    }

    #[test]
    fn computes_known_iban_check_digits() {
        assert_eq!(iban_from_bban("DE", "370400440532013000").as_deref(), Some("DE89370400440532013000"));
        assert_eq!(iban_from_bban("GB", "WEST12345698765432").as_deref(), Some("GB82WEST12345698765432"));
    }

    #[test]
    fn seeds_twenty_distinct_customers_with_every_phone_style() {
        let rows = seed_customers();
        assert_eq!(rows.len(), 20);
        let emails: std::collections::HashSet<_> = rows.iter().map(|c| c.email.as_str()).collect();
        assert_eq!(emails.len(), 20);
        assert!(rows.iter().any(|c| c.phone.starts_with("+1 415-555-01")));
        assert!(rows.iter().any(|c| c.phone.starts_with("(415) 555-")));
        assert!(rows.iter().any(|c| c.phone.starts_with("+44 20 7946")));
    }
}
