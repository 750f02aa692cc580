package chat

import (
	"unicode/utf8"

	"github.com/rivo/uniseg"
)

// ValidEmoji reports whether s is a reaction inbox accepts: exactly one
// grapheme cluster (Unicode text segmentation, rivo/uniseg) of at most 32
// bytes, made only of code points from the emoji and pictograph blocks,
// which starts with a pictograph, a regional indicator (a flag is two) or
// a keycap base (0-9, # and * followed by U+FE0F U+20E3), and otherwise
// holds only what joins emoji into one: ZERO WIDTH JOINER, variation
// selectors, skin tones, the combining keycap and tag characters
// (subdivision flags). So "👍", "❤️", "👩‍💻", "🇫🇷" and "1️⃣" pass; letters,
// digits alone, text, whitespace, controls and two emoji side by side do
// not.
func ValidEmoji(s string) bool {
	if s == "" || len(s) > 32 || !utf8.ValidString(s) || uniseg.GraphemeClusterCount(s) != 1 {
		return false
	}
	first, size := utf8.DecodeRuneInString(s)
	rest := s[size:]
	switch {
	case isKeycapBase(first):
		return rest == "\uFE0F\u20E3"
	case !isPictograph(first):
		return false
	}
	for _, r := range rest {
		if !isPictograph(r) && !isEmojiComponent(r) {
			return false
		}
	}
	return true
}

func isKeycapBase(r rune) bool { return r >= '0' && r <= '9' || r == '#' || r == '*' }

// isEmojiComponent: what joins or modifies emoji inside one cluster.
func isEmojiComponent(r rune) bool {
	switch {
	case r == 0x200D, // ZERO WIDTH JOINER
		r == 0xFE0E, r == 0xFE0F, // text and emoji presentation selectors
		r == 0x20E3,                  // COMBINING ENCLOSING KEYCAP
		r >= 0x1F3FB && r <= 0x1F3FF, // skin tones
		r >= 0xE0020 && r <= 0xE007F: // tags
		return true
	}
	return false
}

// isPictograph: the emoji and pictograph blocks, and the few emoji that
// live among other symbols.
func isPictograph(r rune) bool {
	switch {
	case r >= 0x1F000 && r <= 0x1FAFF && !isEmojiComponent(r): // mahjong, cards, enclosed (regional indicators), pictographs, emoticons, transport, …
		return true
	case r >= 0x2600 && r <= 0x27BF: // miscellaneous symbols, dingbats
		return true
	case r >= 0x2190 && r <= 0x21FF, r >= 0x2300 && r <= 0x23FF, r >= 0x25A0 && r <= 0x25FF, r >= 0x2B00 && r <= 0x2BFF:
		return true // arrows, technical (⌚ ⏰), geometric shapes (▶), miscellaneous symbols and arrows (⭐ ⬆)
	}
	switch r {
	case 0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x24C2, 0x2934, 0x2935, 0x3030, 0x303D, 0x3297, 0x3299:
		return true // © ® ‼ ⁉ ™ ℹ Ⓜ ⤴ ⤵ 〰 〽 ㊗ ㊙
	}
	return false
}
