//! A request's headers as the filter reads them: once, into one buffer.
//!
//! Every request needs several headers (method, path, token, request id, and whatever
//! header rules look at). Reading them one host call at a time costs a crossing into
//! Envoy and, for each value, another back into the VM to allocate it; reading the whole
//! map into a `Vec<(String, String)>` costs two allocations per header. This keeps all
//! names and values in one `String` with their offsets: two allocations per request,
//! whatever the number of headers.

/// Names are lower-case (as Envoy hands them over); a repeated header appears once per
/// value, in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderList {
    text: String,
    /// Per header: where its name starts, where the name ends (and the value starts),
    /// where the value ends, all offsets into `text`.
    spans: Vec<[usize; 3]>,
}

impl HeaderList {
    /// Room for `count` headers of `bytes` bytes in all (names and values).
    pub fn with_capacity(count: usize, bytes: usize) -> HeaderList {
        HeaderList { text: String::with_capacity(bytes), spans: Vec::with_capacity(count) }
    }

    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let middle = self.text.len();
        self.text.push_str(value);
        self.spans.push([start, middle, self.text.len()]);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&[start, middle, end]| {
            (self.text.get(start..middle).unwrap_or_default(), self.text.get(middle..end).unwrap_or_default())
        })
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        let &[_, middle, end] = self.spans.iter().find(|span| self.name_is(span, name))?;
        self.text.get(middle..end)
    }

    /// Every value of `name`, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        // Names are compared as bytes, lengths first: most headers are rejected without
        // touching their text, and only a match pays for slicing out a `str`.
        self.spans
            .iter()
            .filter(move |span| self.name_is(span, name))
            .map(|&[_, middle, end]| self.text.get(middle..end).unwrap_or_default())
    }

    fn name_is(&self, &[start, middle, _]: &[usize; 3], name: &str) -> bool {
        middle - start == name.len() && self.text.as_bytes().get(start..middle) == Some(name.as_bytes())
    }

    /// Forgets every value of `name` (the text stays in the buffer, unreferenced).
    pub fn remove(&mut self, name: &str) {
        let mut spans = std::mem::take(&mut self.spans);
        spans.retain(|span| !self.name_is(span, name));
        self.spans = spans;
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for HeaderList {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> HeaderList {
        let mut list = HeaderList::default();
        for (name, value) in pairs {
            list.push(name, value);
        }
        list
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_keep_every_value_in_order() {
        let list: HeaderList =
            [(":path", "/a"), ("x-tag", "one"), ("accept", "*/*"), ("x-tag", "two")].into_iter().collect();
        assert_eq!(list.get("x-tag"), Some("one"));
        assert_eq!(list.values("x-tag").collect::<Vec<_>>(), ["one", "two"]);
        assert_eq!(list.get("x-missing"), None);
        assert_eq!(list.iter().count(), 4);
    }

    #[test]
    fn a_name_is_never_matched_across_the_name_value_boundary() {
        // "x-a" + "b" and "x-ab" + "" are stored as the same bytes; the spans tell them apart.
        let list: HeaderList = [("x-a", "b"), ("x-ab", "")].into_iter().collect();
        assert_eq!(list.get("x-a"), Some("b"));
        assert_eq!(list.get("x-ab"), Some(""));
    }

    #[test]
    fn removed_headers_are_gone_with_all_their_values() {
        let mut list: HeaderList =
            [("x-airlock-subject", "root"), ("host", "h"), ("x-airlock-subject", "admin")].into_iter().collect();
        list.remove("x-airlock-subject");
        assert_eq!(list.iter().collect::<Vec<_>>(), [("host", "h")]);
    }
}
