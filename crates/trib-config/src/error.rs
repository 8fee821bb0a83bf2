//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading configuration or the generated key file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("failed to read config file {}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The configuration (or the generated key file) is not valid. Every problem found is listed,
    /// not only the first, so one edit can fix them all.
    #[error("{}", InvalidDisplay { file: file.as_ref(), problems })]
    Invalid {
        /// The file the problems are in, if the text came from a file.
        file: Option<PathBuf>,
        /// The problems, in the order they were found; never empty.
        problems: Vec<Problem>,
    },
    /// The generated key file (`<data_dir>/keys.toml`) could not be read.
    #[error("failed to read key file {}", path.display())]
    ReadKeys {
        /// The key file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The generated key file (or its directory) could not be written.
    #[error("failed to write key file {}", path.display())]
    WriteKeys {
        /// The key file.
        path: PathBuf,
        /// Why writing failed.
        #[source]
        source: io::Error,
    },
    /// The operating system's random number generator failed while generating a key.
    #[error("failed to generate a random key")]
    Random(#[source] getrandom::Error),
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] error; empty for other kinds.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// One thing wrong with a configuration: where it is and what is wrong.
///
/// Displays as `line 12: sources[1].write_key: must not be empty`; the line is left out when it
/// is unknown (for instance for a required key that is missing from the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The TOML path of the offending value, such as `sources[1].write_key`. Empty for a
    /// syntax error; the name of the variable for a key taken from the environment.
    pub path: String,
    /// The 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, lowercase, such as `must not be empty`. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Renders `invalid configuration in <file>:` followed by one indented problem per line.
struct InvalidDisplay<'a> {
    file: Option<&'a PathBuf>,
    problems: &'a [Problem],
}

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        if let Some(file) = self.file {
            write!(f, " in {}", file.display())?;
        }
        f.write_str(":")?;
        for problem in self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}
