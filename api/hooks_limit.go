package api

// maxHookDepth bounds the nesting of a hook body. The hooks' JSON is one
// flat object: anything deeper is refused before a decoder walks it.
const maxHookDepth = 8

// jsonDepth returns how deeply arrays and objects nest in b, a JSON text,
// stopping as soon as it passes limit; brackets inside strings do not
// count. It does not validate b.
func jsonDepth(b []byte, limit int) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > deepest {
				deepest = depth
				if deepest > limit {
					return deepest
				}
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}
