"""zmqapp: a Flask-style microframework for ZeroMQ services."""

from __future__ import annotations

__version__ = "0.1.0"  # first: modules of the package import it

from .app import App as App
from .channel import Channel as Channel
from .codecs import Codec as Codec
from .config import Config as Config
from .errors import DecodeError as DecodeError
from .errors import NotRunning as NotRunning
from .errors import RemoteError as RemoteError
from .errors import SendQueueFull as SendQueueFull
from .errors import SetupError as SetupError
from .errors import Timeout as Timeout
from .errors import Unroutable as Unroutable
from .errors import ZmqAppError as ZmqAppError
from .message import Message as Message
from .message import Multipart as Multipart
