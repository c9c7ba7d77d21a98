"""Handler introspection: what a handler asks for, decided once when it is registered."""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import zmq

from ._typed import TypedBody, converter_for
from .errors import SetupError

if TYPE_CHECKING:
    from .message import Message

#: What the hot loop calls per receiver: message in, return value (or awaitable) out.
Invoker = Callable[["Message"], Any]
#: Runs a plain function in a worker thread and returns an awaitable of its result.
ThreadRunner = Callable[[Callable[[], Any]], Awaitable[Any]]

#: Parameters a handler may declare by name, and which socket types can fill them.
INJECTABLE: dict[str, tuple[int, ...] | None] = {
    "topic": (zmq.SUB, zmq.XSUB),
    "identity": (zmq.ROUTER,),
    "frames": None,
    "channel": None,
    "message": None,
    "user_id": None,
}


def is_async_callable(fn: Any) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an async __call__."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    )


def describe(fn: Any) -> str:
    """A readable name for a handler in messages and logs."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else str(name)


class Handler:
    """A user function attached to a channel, with its calling convention worked out.

    ``body_param`` is the parameter that receives the body (the first positional parameter
    whose name is not injectable), ``inject`` the names filled from the message, and
    ``body_type`` the body parameter's annotation when it asks for a typed body.
    """

    def __init__(self, fn: Callable[..., Any], *, threaded: bool = False) -> None:
        if not callable(fn):
            raise SetupError(f"a handler must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.name = describe(fn)
        self.is_async = is_async_callable(fn)
        self.threaded = threaded
        if threaded and self.is_async:
            raise SetupError(
                f"handler {self.name} is a coroutine function; threaded=True is for blocking "
                "plain functions, so drop it (coroutines already run concurrently)"
            )
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise SetupError(f"cannot read the parameters of handler {self.name}: {exc}") from None

        self.body_param: str | None = None
        self.inject: tuple[str, ...] = ()
        inject: list[str] = []
        for param in sig.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.name in INJECTABLE:
                if param.kind is param.POSITIONAL_ONLY:
                    raise SetupError(
                        f"handler {self.name} declares {param.name!r} as positional-only; "
                        "zmqapp fills it by name, so remove the '/' before it"
                    )
                inject.append(param.name)
            elif self.body_param is None and param.kind in (
                param.POSITIONAL_ONLY,
                param.POSITIONAL_OR_KEYWORD,
            ):
                self.body_param = param.name
            elif param.default is param.empty:
                allowed = ", ".join(INJECTABLE)
                raise SetupError(
                    f"handler {self.name} has a parameter {param.name!r} that zmqapp cannot "
                    f"fill: after the body, a handler may declare {allowed}; give "
                    f"{param.name!r} a default value or remove it"
                )
        self.inject = tuple(inject)
        #: Whether the body can be passed positionally (it is the first parameter); if an
        #: injected parameter comes first, as in ``def h(topic, body)``, it goes by name.
        first = next(iter(sig.parameters), None)
        self.body_positional = self.body_param is not None and self.body_param == first
        self.body_type: Any = None
        if self.body_param is not None:
            self.body_type = _annotation(fn, self.body_param)
        #: Validates and converts the decoded body for a typed body parameter, else None.
        self.convert: TypedBody | None = converter_for(self.body_type)
        #: Calls the function with what it asks for from a :class:`~zmqapp.Message`.
        self.invoke: Invoker = _call_shaped(self)

    def __call__(self, sender: Any, *, message: Message, **kwargs: Any) -> Any:
        """Call the handler for ``message``, as a receiver of the channel's blinker signal:
        ``app.signal(name).send(app, message=message)`` calls every handler of the channel."""
        return self.invoke(message)

    def check(self, channel_name: str, socket_type: int, type_name: str) -> None:
        """Raise :class:`SetupError` if this handler asks for what ``socket_type`` never has."""
        for name in self.inject:
            types = INJECTABLE[name]
            if types is not None and socket_type not in types:
                owners = " and ".join(zmq.SocketType(t).name for t in types)
                raise SetupError(
                    f"handler {self.name} asks for {name!r}, but channel {channel_name!r} is a "
                    f"{type_name} socket and only {owners} messages have one; remove the "
                    "parameter"
                )

    def __repr__(self) -> str:
        return f"<Handler {self.name}>"


def _annotation(fn: Callable[..., Any], param: str) -> Any:
    """The evaluated annotation of ``param``, or None (unannotated or unresolvable)."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    try:
        hints = inspect.get_annotations(target, eval_str=True)
    except Exception:
        try:
            hints = inspect.get_annotations(target)
        except Exception:
            return None
    value = hints.get(param)
    return None if isinstance(value, str) else value


def _identity(value: Any) -> Any:
    return value


def _getter(name: str) -> Callable[[Message], Any]:
    if name == "message":
        return lambda message: message
    return attrgetter(name)


def _call_shaped(handler: Handler) -> Invoker:
    """A closure that calls ``handler.fn`` as its parameters ask: ``fn(body)`` in the common
    case, with no per-message introspection."""
    fn = handler.fn
    convert = handler.convert
    getters = tuple((name, _getter(name)) for name in handler.inject)
    invoke: Invoker
    if handler.body_param is None:
        if getters:

            def invoke(message: Message) -> Any:
                return fn(**{name: get(message) for name, get in getters})

        else:

            def invoke(message: Message) -> Any:
                return fn()

    elif not handler.body_positional:
        body_param = handler.body_param
        convert_body = convert or _identity

        def invoke(message: Message) -> Any:
            kwargs = {name: get(message) for name, get in getters}
            kwargs[body_param] = convert_body(message.body)
            return fn(**kwargs)

    elif convert is not None:

        def invoke(message: Message) -> Any:
            return fn(convert(message.body), **{name: get(message) for name, get in getters})

    elif getters:

        def invoke(message: Message) -> Any:
            return fn(message.body, **{name: get(message) for name, get in getters})

    else:

        def invoke(message: Message) -> Any:
            return fn(message.body)

    return invoke


def make_invoker(
    receiver: Any, sender: Any, run_in_thread: ThreadRunner, *, threaded: bool = False
) -> tuple[Invoker, bool]:
    """Build the callable dispatch uses for ``receiver``, and whether it returns an awaitable.

    A :class:`Handler` is called as its parameters ask (in a worker thread if ``threaded``).
    Anything else connected to the channel's signal is a blinker receiver and is called as
    ``receiver(sender, message=message)``.
    """
    if not isinstance(receiver, Handler):
        # The signal decides how long a receiver lives (weak by default, as in blinker), so
        # hold it weakly here too; a dead one is skipped until the signal drops it.
        try:
            ref: Callable[[], Any]
            if inspect.ismethod(receiver):
                ref = weakref.WeakMethod(receiver)
            else:
                ref = weakref.ref(receiver)
        except TypeError:
            ref = lambda: receiver  # noqa: E731 - not weak-referenceable: the signal holds it

        def call_receiver(message: Message) -> Any:
            live = ref()
            return None if live is None else live(sender, message=message)

        call_receiver.handler_ref = ref  # type: ignore[attr-defined]
        return call_receiver, is_async_callable(receiver)

    invoke = receiver.invoke
    if threaded:
        call = invoke

        def invoke(message: Message) -> Any:
            return run_in_thread(functools.partial(call, message))

    invoke.handler = receiver.fn  # type: ignore[attr-defined]
    return invoke, receiver.is_async or threaded
