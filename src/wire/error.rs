//! [`DecodeError`]: why a datagram or a message was refused. Each variant is
//! a metric label.

/// Why a packet or message could not be decoded. Each variant is a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    #[error("datagram shorter than the packet header")]
    ShortHeader,
    /// Longer than any producer may send.
    #[error("datagram longer than the packet limit")]
    Oversized,
    /// The session id is not printable ASCII, space-padded.
    #[error("session id is not printable ASCII")]
    BadSession,
    /// A message's length prefix runs past the end of the datagram.
    #[error("message length runs past the datagram")]
    LengthOverrun,
    /// The count promises more messages than the datagram holds.
    #[error("message count runs past the datagram")]
    CountOverrun,
    /// Bytes left over after the last counted message.
    #[error("bytes after the last message")]
    TrailingBytes,
    /// The message is not the MessagePack array its type promises.
    #[error("malformed MessagePack")]
    BadMsgpack,
    /// A field is out of range (locate above 65,535, negative size, ...).
    #[error("field out of range")]
    BadField,
    /// A well-formed message of a type this relay does not know.
    #[error("unknown message type")]
    UnknownType,
    /// A book state's level array is malformed: not `[price, size, orders]`
    /// arrays, over the bound, a size of 0, or not best first.
    #[error("malformed book levels")]
    BadLevels,
}

impl DecodeError {
    /// Every reason, for pre-creating the metric series.
    pub const ALL: [DecodeError; 10] = [
        DecodeError::ShortHeader,
        DecodeError::Oversized,
        DecodeError::BadSession,
        DecodeError::LengthOverrun,
        DecodeError::CountOverrun,
        DecodeError::TrailingBytes,
        DecodeError::BadMsgpack,
        DecodeError::BadField,
        DecodeError::UnknownType,
        DecodeError::BadLevels,
    ];

    /// A stable snake_case name, used as the `reason` metric label.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeError::ShortHeader => "short_header",
            DecodeError::Oversized => "oversized",
            DecodeError::BadSession => "bad_session",
            DecodeError::LengthOverrun => "length_overrun",
            DecodeError::CountOverrun => "count_overrun",
            DecodeError::TrailingBytes => "trailing_bytes",
            DecodeError::BadMsgpack => "bad_msgpack",
            DecodeError::BadField => "bad_field",
            DecodeError::UnknownType => "unknown_type",
            DecodeError::BadLevels => "bad_levels",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DecodeError;

    #[test]
    fn all_lists_every_reason_once() {
        // No wildcard arm: a new variant fails to compile here until `ALL`
        // (and so the metric's pre-created series) lists it.
        let position = |e: DecodeError| match e {
            DecodeError::ShortHeader => 0,
            DecodeError::Oversized => 1,
            DecodeError::BadSession => 2,
            DecodeError::LengthOverrun => 3,
            DecodeError::CountOverrun => 4,
            DecodeError::TrailingBytes => 5,
            DecodeError::BadMsgpack => 6,
            DecodeError::BadField => 7,
            DecodeError::UnknownType => 8,
            DecodeError::BadLevels => 9,
        };
        for (i, e) in DecodeError::ALL.into_iter().enumerate() {
            assert_eq!(position(e), i, "{e:?}");
        }
    }
}
