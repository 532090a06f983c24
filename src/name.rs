//! File names. A file is known by its name everywhere in hive, as in the seed.
//! Names come from the network and end up as file names on disk, so they are
//! validated once, here, and carried as [`FileName`] from then on.

use std::{borrow::Borrow, fmt, str::FromStr};

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// A valid file name: 1-255 bytes of UTF-8 with no `/`, `\`, NUL or control
/// character, not `.` or `..`, and no drive prefix (`C:`). Such a name can be
/// joined to a directory without ever leaving it.
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
    #[error("file name may not be \".\" or \"..\"")]
    Dots,
    #[error("file name may not start with a drive prefix")]
    Drive,
}

impl FileName {
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
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
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(NameError::Drive);
    }
    Ok(())
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
