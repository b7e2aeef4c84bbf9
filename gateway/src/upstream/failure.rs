//! The one way a failed request to an API worker is told: its status, the stable code and
//! message of the JSON error the client gets, and the `kind` label it is counted under in
//! `btp_gateway_upstream_errors_total`. Every path (forwarding over HTTP/1 and HTTP/2,
//! WebSocket tunnels) words its failures here, so a client and an operator see the same
//! thing whichever path the request took.

use std::fmt;
use std::io;

use super::Refused;

#[derive(Debug)]
pub enum Failure {
    /// No healthy worker, or none could be reached: 503.
    Unavailable(Refused),
    /// The worker did not answer (its head, or the next bytes of its body) in time: 504.
    Timeout,
    /// The worker's answer broke off or is not HTTP: 502.
    Broken(Broken),
}

/// How a worker's answer broke.
#[derive(Debug)]
pub enum Broken {
    Io(io::Error),
    /// Not a response head this gateway relays (malformed, too large, interim).
    Head,
    /// A body whose framing does not parse.
    Body,
}

impl Failure {
    pub fn io(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::TimedOut {
            Failure::Timeout
        } else {
            Failure::Broken(Broken::Io(e))
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Failure::Unavailable(_) => 503,
            Failure::Timeout => 504,
            Failure::Broken(_) => 502,
        }
    }

    /// The `code` of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Unavailable(_) => "upstream_unavailable",
            Failure::Timeout => "upstream_timeout",
            Failure::Broken(_) => "bad_gateway",
        }
    }

    /// The `message` of the JSON error.
    pub fn message(&self) -> &'static str {
        match self {
            Failure::Unavailable(refused) => refused.message(),
            Failure::Timeout => "the api worker did not answer in time",
            Failure::Broken(_) => "the api worker failed to answer",
        }
    }

    /// The `kind` label it is counted under, if it is counted here (a failed connect is
    /// counted where it happens, as `connect`).
    pub fn metric(&self) -> Option<&'static str> {
        match self {
            Failure::Unavailable(_) => None,
            Failure::Timeout => Some("timeout"),
            Failure::Broken(_) => Some("protocol"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unavailable(refused) => f.write_str(refused.message()),
            Failure::Timeout => f.write_str("the api worker did not answer in time"),
            Failure::Broken(Broken::Io(e)) => write!(f, "reading the api worker's answer: {e}"),
            Failure::Broken(Broken::Head) => {
                f.write_str("malformed response head from the api worker")
            }
            Failure::Broken(Broken::Body) => {
                f.write_str("malformed response body from the api worker")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_its_status_code_and_metric() {
        let table = [
            (
                Failure::Unavailable(Refused::NoneHealthy),
                503,
                "upstream_unavailable",
                None,
            ),
            (
                Failure::Unavailable(Refused::Unreachable),
                503,
                "upstream_unavailable",
                None,
            ),
            (
                Failure::Unavailable(Refused::Busy),
                503,
                "upstream_unavailable",
                None,
            ),
            (Failure::Timeout, 504, "upstream_timeout", Some("timeout")),
            (
                Failure::io(io::ErrorKind::TimedOut.into()),
                504,
                "upstream_timeout",
                Some("timeout"),
            ),
            (
                Failure::io(io::ErrorKind::UnexpectedEof.into()),
                502,
                "bad_gateway",
                Some("protocol"),
            ),
            (
                Failure::Broken(Broken::Head),
                502,
                "bad_gateway",
                Some("protocol"),
            ),
            (
                Failure::Broken(Broken::Body),
                502,
                "bad_gateway",
                Some("protocol"),
            ),
        ];
        for (failure, status, code, metric) in table {
            assert_eq!(
                (failure.status(), failure.code(), failure.metric()),
                (status, code, metric),
                "{failure}"
            );
            assert!(!failure.message().is_empty());
        }
        assert_eq!(
            Failure::Unavailable(Refused::NoneHealthy).message(),
            "no healthy api worker"
        );
    }
}
