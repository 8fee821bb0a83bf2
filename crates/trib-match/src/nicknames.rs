//! A small built-in table of common English given-name nicknames.

/// `(nickname, formal name)` pairs. A nickname may belong to several formal names (`chris`,
/// `pat`, `alex`); two names are nickname-equivalent when they share a formal name (so
/// `bob ~ robert` and `bob ~ rob`, both being forms of `robert`).
pub const NICKNAMES: &[(&str, &str)] = &[
    ("abby", "abigail"),
    ("al", "albert"),
    ("al", "alfred"),
    ("al", "alan"),
    ("alex", "alexander"),
    ("alex", "alexandra"),
    ("andy", "andrew"),
    ("drew", "andrew"),
    ("tony", "anthony"),
    ("barb", "barbara"),
    ("ben", "benjamin"),
    ("benny", "benjamin"),
    ("bernie", "bernard"),
    ("brad", "bradley"),
    ("cathy", "catherine"),
    ("kate", "catherine"),
    ("katie", "catherine"),
    ("charlie", "charles"),
    ("chuck", "charles"),
    ("chris", "christopher"),
    ("chris", "christina"),
    ("chris", "christine"),
    ("christy", "christina"),
    ("cindy", "cynthia"),
    ("dan", "daniel"),
    ("danny", "daniel"),
    ("dave", "david"),
    ("deb", "deborah"),
    ("debbie", "deborah"),
    ("don", "donald"),
    ("donnie", "donald"),
    ("doug", "douglas"),
    ("ed", "edward"),
    ("eddie", "edward"),
    ("ted", "edward"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("betty", "elizabeth"),
    ("lisa", "elizabeth"),
    ("eliza", "elizabeth"),
    ("fred", "frederick"),
    ("frank", "francis"),
    ("fran", "frances"),
    ("gene", "eugene"),
    ("greg", "gregory"),
    ("hank", "henry"),
    ("harry", "henry"),
    ("jim", "james"),
    ("jimmy", "james"),
    ("jamie", "james"),
    ("jan", "janet"),
    ("jen", "jennifer"),
    ("jenny", "jennifer"),
    ("jeff", "jeffrey"),
    ("jerry", "gerald"),
    ("jerry", "jerome"),
    ("jess", "jessica"),
    ("jessie", "jessica"),
    ("joe", "joseph"),
    ("joey", "joseph"),
    ("john", "jonathan"),
    ("jon", "jonathan"),
    ("jack", "john"),
    ("johnny", "john"),
    ("josh", "joshua"),
    ("judy", "judith"),
    ("kathy", "kathleen"),
    ("kathy", "katherine"),
    ("kate", "katherine"),
    ("katie", "katherine"),
    ("ken", "kenneth"),
    ("kenny", "kenneth"),
    ("kim", "kimberly"),
    ("larry", "lawrence"),
    ("len", "leonard"),
    ("lenny", "leonard"),
    ("lou", "louis"),
    ("maggie", "margaret"),
    ("meg", "margaret"),
    ("peggy", "margaret"),
    ("marge", "margaret"),
    ("matt", "matthew"),
    ("mike", "michael"),
    ("mikey", "michael"),
    ("mick", "michael"),
    ("mandy", "amanda"),
    ("manny", "emmanuel"),
    ("molly", "mary"),
    ("polly", "mary"),
    ("nancy", "ann"),
    ("annie", "ann"),
    ("annie", "anna"),
    ("nate", "nathan"),
    ("nate", "nathaniel"),
    ("nick", "nicholas"),
    ("nicky", "nicholas"),
    ("pam", "pamela"),
    ("pat", "patricia"),
    ("pat", "patrick"),
    ("patty", "patricia"),
    ("trish", "patricia"),
    ("pete", "peter"),
    ("phil", "phillip"),
    ("ray", "raymond"),
    ("rick", "richard"),
    ("rich", "richard"),
    ("dick", "richard"),
    ("rob", "robert"),
    ("bob", "robert"),
    ("bobby", "robert"),
    ("bert", "robert"),
    ("ron", "ronald"),
    ("ronnie", "ronald"),
    ("russ", "russell"),
    ("sam", "samuel"),
    ("sam", "samantha"),
    ("sammy", "samuel"),
    ("sandy", "sandra"),
    ("steve", "steven"),
    ("steve", "stephen"),
    ("stan", "stanley"),
    ("sue", "susan"),
    ("susie", "susan"),
    ("terry", "terrence"),
    ("terry", "theresa"),
    ("tom", "thomas"),
    ("tommy", "thomas"),
    ("tim", "timothy"),
    ("timmy", "timothy"),
    ("vicky", "victoria"),
    ("vince", "vincent"),
    ("walt", "walter"),
    ("will", "william"),
    ("bill", "william"),
    ("billy", "william"),
    ("willy", "william"),
    ("zach", "zachary"),
];

use std::collections::HashMap;
use std::sync::OnceLock;

/// Bit set of the formal names a (lowercase) name belongs to; 0 when it is in no pair.
pub(crate) fn nickname_groups(name: &str) -> u128 {
    static TABLE: OnceLock<HashMap<&'static str, u128>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut formal: Vec<&str> = NICKNAMES.iter().map(|(_, f)| *f).collect();
        formal.sort_unstable();
        formal.dedup();
        debug_assert!(
            formal.len() <= 128,
            "nickname table has too many formal names"
        );
        let bit = |f: &str| 1u128 << formal.iter().position(|x| *x == f).unwrap_or(127);
        let mut map: HashMap<&'static str, u128> = HashMap::new();
        for &(nick, form) in NICKNAMES {
            *map.entry(nick).or_default() |= bit(form);
            *map.entry(form).or_default() |= bit(form);
        }
        map
    });
    table.get(name).copied().unwrap_or(0)
}

/// Whether two lowercase given names are nickname-equivalent (`bill`/`william`,
/// `bob`/`rob`). A name is not its own nickname: equal names are an exact match instead.
pub fn nickname_equivalent(a: &str, b: &str) -> bool {
    a != b && (nickname_groups(a) & nickname_groups(b)) != 0
}
