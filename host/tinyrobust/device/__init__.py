"""The device: boards, the emulators and serial targets that run the firmware, and the link that talks to it."""
