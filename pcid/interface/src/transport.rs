//! OS transport for the channels: inherited fd / Unix sockets.
