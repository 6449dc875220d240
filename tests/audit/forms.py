"""Submit a server-rendered form the way a browser would: read what the page offers (inputs,
checked boxes, selected options, textareas), change a few fields, post it back."""

from html.parser import HTMLParser

SKIPPED_TYPES = {"submit", "button", "reset", "file", "image"}


class _FormParser(HTMLParser):
    def __init__(self, form_id: str | None):
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.in_form = False
        self.fields: list[tuple[str, str]] = []
        self._select: tuple[str, bool] | None = None  # (name, multiple)
        self._select_values: list[str] = []
        self._select_first: str | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.in_form = self.form_id is None or a.get("id") == self.form_id
            return
        if not self.in_form or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = (a.get("type") or "text").lower()
            if kind in SKIPPED_TYPES:
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((name, a.get("value", "on")))
                return
            self.fields.append((name, a.get("value") or ""))
        elif tag == "select" and name:
            self._select = (name, "multiple" in a)
            self._select_values, self._select_first = [], None
        elif tag == "option" and self._select is not None:
            value = a.get("value", "")
            if self._select_first is None:
                self._select_first = value
            if "selected" in a:
                self._select_values.append(value)
        elif tag == "textarea" and name:
            self._textarea, self._text = name, []

    def handle_data(self, data):
        if self._textarea is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False
        elif tag == "select" and self._select is not None:
            name, multiple = self._select
            values = self._select_values or ([] if multiple else [self._select_first or ""])
            self.fields.extend((name, v) for v in values)
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, "".join(self._text).lstrip("\n")))
            self._textarea = None


def form_data(html: str, form_id: str | None = None, **changes) -> dict:
    """The fields the form at ``form_id`` would post, with ``changes`` applied (a list value
    for a multiple select; None removes a field, as an unticked box)."""
    parser = _FormParser(form_id)
    parser.feed(html)
    data: dict = {}
    for name, value in parser.fields:
        if name in data:
            data[name] = [*data[name], value] if isinstance(data[name], list) else [data[name], value]
        else:
            data[name] = value
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data
