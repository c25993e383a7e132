package routing

// Carrier names used by the cn preset. A configuration's carriers must use
// these names for the preset to reach them.
const (
	Mobile  = "mobile"  // China Mobile (中国移动)
	Unicom  = "unicom"  // China Unicom (中国联通)
	Telecom = "telecom" // China Telecom (中国电信)
)

// segment is one number block of a preset.
type segment struct {
	prefix  string
	carrier string
}

// cnSegments is the "cn" preset: every mobile number segment of mainland
// China (country code 86) allocated to China Mobile, China Unicom and China
// Telecom, as national-number prefixes. Numbers keep their segment after
// mobile number portability (携号转网, nationwide since 2019), so a ported
// number is routed to its original operator; operators' SMSCs deliver
// to ported numbers, and a prefix override fixes a block that does not.
//
// Sources, checked against each other:
//   - Wikipedia, "Telephone numbers in China", section "Mobile phones"
//     (https://en.wikipedia.org/wiki/Telephone_numbers_in_China);
//   - google/libphonenumber, resources/carrier/en/86.txt (commit 91b6671),
//     which maps 130-199 to operators, including 162-167, 170x, 171, 172,
//     174, 190-199 (192 = CBN);
//   - VincentSit/ChinaMobilePhoneNumberRegex README "Rules" tables (commit
//     2da699d, 2022-05-17), for the 4- and 5-digit blocks: 1340-1348/1349,
//     1700-1709, 17400-17405, 1410/1440/1441/146/148 IoT, 145/147/149 data;
//   - MIIT's allocation of 190 (Telecom), 197 (Mobile), 196 (Unicom) and
//     192 (China Broadnet) on 2019-12-24 for 5G, after 166/198/199 in 2017.
//
// Not in the table, so such numbers take routing.default: 1740 06-12
// (MIIT emergency communications), 1749 (Inmarsat via CTTIC), and the
// unallocated 140, 142, 143, 154, 161, 164, 194.
var cnSegments = []segment{
	// 13x: the 2G/3G era segments.
	{"130", Unicom}, {"131", Unicom}, {"132", Unicom},
	{"133", Telecom},
	// 134: 1340-1348 China Mobile; 1349 was China Satcom's satellite block,
	// now China Telecom's.
	{"1340", Mobile}, {"1341", Mobile}, {"1342", Mobile}, {"1343", Mobile},
	{"1344", Mobile}, {"1345", Mobile}, {"1346", Mobile}, {"1347", Mobile},
	{"1348", Mobile}, {"1349", Telecom},
	{"135", Mobile}, {"136", Mobile}, {"137", Mobile}, {"138", Mobile}, {"139", Mobile},

	// 14x: 11-digit data-plan segments 145/147/149 (SMS capable) and the
	// 13-digit IoT blocks 1410, 1440, 1441, 146, 148.
	{"1410", Telecom},
	{"1440", Mobile}, {"1441", Mobile},
	{"145", Unicom},
	{"146", Unicom},
	{"147", Mobile},
	{"148", Mobile},
	{"149", Telecom},

	// 15x (154 unallocated).
	{"150", Mobile}, {"151", Mobile}, {"152", Mobile},
	{"153", Telecom},
	{"155", Unicom}, {"156", Unicom},
	{"157", Mobile}, {"158", Mobile}, {"159", Mobile},

	// 16x: 166 Unicom; 162, 165, 167 are virtual-operator (MVNO) segments on
	// Telecom, Mobile and Unicom networks respectively.
	{"162", Telecom},
	{"165", Mobile},
	{"166", Unicom},
	{"167", Unicom},

	// 17x. 170 is split by its fourth digit between the host networks of
	// virtual operators; 171 is Unicom's virtual-operator segment.
	{"1700", Telecom}, {"1701", Telecom}, {"1702", Telecom},
	{"1703", Mobile}, {"1705", Mobile}, {"1706", Mobile},
	{"1704", Unicom}, {"1707", Unicom}, {"1708", Unicom}, {"1709", Unicom},
	{"171", Unicom},
	{"172", Mobile},
	{"173", Telecom},
	// 174: 17400-17405 are China Telecom's Tiantong satellite service
	// (1740x); 17406-17412 and 1749 belong to others (see above).
	{"17400", Telecom}, {"17401", Telecom}, {"17402", Telecom},
	{"17403", Telecom}, {"17404", Telecom}, {"17405", Telecom},
	{"175", Unicom}, {"176", Unicom},
	{"177", Telecom},
	{"178", Mobile},

	// 18x.
	{"180", Telecom}, {"181", Telecom},
	{"182", Mobile}, {"183", Mobile}, {"184", Mobile},
	{"185", Unicom}, {"186", Unicom},
	{"187", Mobile}, {"188", Mobile},
	{"189", Telecom},

	// 19x (194 unallocated).
	{"190", Telecom}, {"191", Telecom},
	// 192 belongs to China Broadnet (中国广电), the fourth operator. It has
	// no SMSC of its own for us: Broadnet builds and shares its 700 MHz 5G
	// network with China Mobile and its subscribers are served over China
	// Mobile's network, so 192 numbers are routed to China Mobile's SMSC.
	{"192", Mobile},
	{"193", Telecom},
	{"195", Mobile},
	{"196", Unicom},
	{"197", Mobile}, {"198", Mobile},
	{"199", Telecom},
}

// presets maps a preset name to its segments.
var presets = map[string][]segment{
	"cn": cnSegments,
	"":   nil,
}
