//! Unit tests of `type: http`.
