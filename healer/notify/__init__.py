"""Chat alerts through apprise that tell the whole remediation story.

`from_environment()` gives the runtime a `Notifier` (or a `NullNotifier` when no URL is
configured); the runtime calls `observe` after each executed plan and `tick` periodically.
Stories are built in `stories` (pure), delivered in `delivery` (background lanes), and the
URLs come from `targets` (Secret file or environment, always redacted in logs).
"""

from healer.notify.delivery import Settings
from healer.notify.notifier import AppriseNotifier, Notifier, NullNotifier, from_environment
from healer.notify.stories import Timings

__all__ = ["AppriseNotifier", "Notifier", "NullNotifier", "Settings", "Timings", "from_environment"]
