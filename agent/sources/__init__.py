"""Where lines come from: files followed live, journald, replay inputs; bytes to lines."""
