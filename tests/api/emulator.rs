//! Emulator tests (see issue 2).
