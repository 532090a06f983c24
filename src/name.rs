//! File names. A file is known by its name everywhere in hive, as in the seed.
//! Names come from the network and end up as file names on disk, so they are
//! validated once, here, and carried as [`FileName`] from then on.

use std::{borrow::Borrow, fmt, str::FromStr};

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A valid file name: 1-255 bytes of UTF-8 in Unicode Normalization Form C,
/// with no `/`, `\`, NUL or control character, no code point that hides or
/// reorders text ([`deceptive`]), not `.` or `..`, and no drive prefix
/// (`C:`). Such a name can be joined to a directory without ever leaving it,
/// and prints as what it is: two names that look alike because one is the
/// NFD spelling of the other are one name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(Box<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is empty")]
    Empty,
    #[error("file name is {0} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong(usize),
    #[error("file name contains a path separator")]
    Separator,
    #[error("file name contains NUL or a control character")]
    Control,
    #[error(
        "file name contains U+{0:04X}, which hides or reorders text (bidi control, line or paragraph separator, or invisible code point); rename the file"
    )]
    Deceptive(u32),
    #[error("file name may not be \".\" or \"..\"")]
    Dots,
    #[error("file name may not start with a drive prefix")]
    Drive,
}

impl FileName {
    /// The name `name` spells, in NFC: an NFD (or otherwise decomposed)
    /// spelling of a name is that name.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let mut name = name.into();
        if is_nfc_quick(name.chars()) != IsNormalized::Yes {
            name = name.nfc().collect();
        }
        validate(&name)?;
        Ok(Self(name.into_boxed_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    if let Some(c) = name.chars().find(|&c| deceptive(c)) {
        return Err(NameError::Deceptive(u32::from(c)));
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(NameError::Drive);
    }
    Ok(())
}

/// Code points a name may not hold because they change how text shows
/// without showing themselves (UTS #39 §3.1 restricts them in
/// identifiers): the bidi controls (U+061C, U+200E/F, U+202A-202E,
/// U+2066-2069), the line and paragraph separators (U+2028/2029), and every
/// Default_Ignorable_Code_Point (zero-width spaces and joiners, variation
/// selectors, Hangul fillers, tags...). Default_Ignorable is Unicode 16's
/// DerivedCoreProperties.txt written out (it only grows into reserved
/// ranges it already lists), because no well-kept crate exposes that one
/// property on its own.
pub fn deceptive(c: char) -> bool {
    const RANGES: [(u32, u32); 18] = [
        (0x00AD, 0x00AD),
        (0x034F, 0x034F),
        (0x061C, 0x061C),
        (0x115F, 0x1160),
        (0x17B4, 0x17B5),
        (0x180B, 0x180F),
        (0x200B, 0x200F),
        (0x2028, 0x2029),
        (0x202A, 0x202E),
        (0x2060, 0x206F),
        (0x3164, 0x3164),
        (0xFE00, 0xFE0F),
        (0xFEFF, 0xFEFF),
        (0xFFA0, 0xFFA0),
        (0xFFF0, 0xFFF8),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0000, 0xE0FFF),
    ];
    let c = u32::from(c);
    RANGES
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// `text` as it is safe to print on a terminal: control characters and
/// [`deceptive`] code points are written as `\u{...}` escapes, everything
/// else (a backslash too: paths may hold one) as itself. For names that came from elsewhere (a tracker, a file
/// listing) before [`FileName`] checked them, or that a peer printed raw.
pub fn escape_for_display(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || deceptive(c);
    if !text.chars().any(bad) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match bad(c) {
            true => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            false => out.push(c),
        }
    }
    out.into()
}

impl FromStr for FileName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for FileName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<FileName> for String {
    fn from(name: FileName) -> String {
        name.0.into()
    }
}

impl AsRef<str> for FileName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for FileName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&*self.0)
    }
}

impl Borrow<str> for FileName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for FileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "23",
            "bse",
            "a.txt",
            "..x",
            "x..",
            "...",
            "ünïcödé 名前",
            "ab:c",
            "1:x",
        ] {
            assert_eq!(
                FileName::new(ok).map(String::from),
                Ok(ok.to_owned()),
                "{ok}"
            );
        }
        let longest = "n".repeat(MAX_NAME_LEN);
        assert!(FileName::new(longest).is_ok());
    }

    #[test]
    fn refuses_hostile_names() {
        let cases = [
            ("", NameError::Empty),
            (&*"n".repeat(MAX_NAME_LEN + 1), NameError::TooLong(256)),
            (&*"x".repeat(4096), NameError::TooLong(4096)),
            ("a\0b", NameError::Control),
            ("line\nbreak", NameError::Control),
            ("bell\u{7}", NameError::Control),
            ("c1\u{85}", NameError::Control),
            ("../x", NameError::Separator),
            ("a/../../b", NameError::Separator),
            ("/abs", NameError::Separator),
            ("..\\x", NameError::Separator),
            (".", NameError::Dots),
            ("..", NameError::Dots),
            ("C:x", NameError::Drive),
            ("c:", NameError::Drive),
        ];
        for (name, want) in cases {
            assert_eq!(FileName::new(name), Err(want), "{name:?}");
        }
    }

    #[test]
    fn deceptive_code_points_are_refused_by_number() {
        for (name, c) in [
            ("invoice\u{202E}fdp.exe", 0x202E),
            ("a\u{202A}b", 0x202A),
            ("a\u{2066}b", 0x2066),
            ("a\u{2069}b", 0x2069),
            ("a\u{200E}b", 0x200E),
            ("a\u{200F}b", 0x200F),
            ("a\u{061C}b", 0x061C),
            ("line\u{2028}sep", 0x2028),
            ("para\u{2029}sep", 0x2029),
            ("zero\u{200B}width", 0x200B),
            ("joiner\u{200D}", 0x200D),
            ("\u{FEFF}bom", 0xFEFF),
            ("soft\u{AD}hyphen", 0xAD),
            ("tag\u{E0041}", 0xE0041),
            ("vs\u{FE0F}", 0xFE0F),
            ("filler\u{3164}", 0x3164),
        ] {
            assert_eq!(
                FileName::new(name),
                Err(NameError::Deceptive(c)),
                "{name:?}"
            );
        }
        let message = FileName::new("x\u{202E}").unwrap_err().to_string();
        assert!(message.contains("U+202E"), "{message}");
    }

    #[test]
    fn nfd_and_nfc_spellings_are_one_name() {
        let nfc = FileName::new("caf\u{E9}").unwrap();
        let nfd = FileName::new("cafe\u{301}").unwrap();
        assert_eq!(nfc, nfd);
        assert_eq!(nfd.as_str(), "caf\u{E9}");
        // Hangul jamo compose into one syllable.
        assert_eq!(
            FileName::new("\u{1100}\u{1161}").unwrap().as_str(),
            "\u{AC00}"
        );
        // The length limit applies to the normalised name.
        let decomposed = "e\u{301}".repeat(127);
        assert_eq!(decomposed.len(), 381);
        assert!(FileName::new(decomposed).is_ok());
    }

    #[test]
    fn printing_escapes_what_would_deceive() {
        assert_eq!(escape_for_display("plain café"), "plain café");
        assert_eq!(
            escape_for_display("a\u{202E}b\nc\u{200B}"),
            "a\\u{202e}b\\u{000a}c\\u{200b}"
        );
    }

    #[test]
    fn multibyte_length_counts_bytes() {
        // 128 two-byte characters are 256 bytes: one too many.
        assert_eq!(FileName::new("é".repeat(128)), Err(NameError::TooLong(256)));
        assert!(FileName::new("é".repeat(127)).is_ok());
    }

    #[test]
    fn a_name_reads_as_itself() {
        let name = FileName::new("bse").unwrap();
        let s: &str = name.as_ref();
        assert_eq!(s, "bse");
    }
}
