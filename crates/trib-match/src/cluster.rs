//! Clustering of merged pairs: union-find with an optional cluster-size cap.

/// Union-find over record indices, with union by size and path halving.
pub(crate) struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub(crate) fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Joins the sets of `a` and `b` unless the result would exceed `cap` records. Returns
    /// whether the two are now in one set.
    pub(crate) fn union_capped(&mut self, a: u32, b: u32, cap: Option<usize>) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return true;
        }
        let (sa, sb) = (self.size[ra as usize], self.size[rb as usize]);
        if let Some(cap) = cap
            && (sa + sb) as usize > cap
        {
            return false;
        }
        let (big, small) = if sa >= sb { (ra, rb) } else { (rb, ra) };
        self.parent[small as usize] = big;
        self.size[big as usize] = sa + sb;
        true
    }
}

/// Cluster id of every record: the smallest record id (byte order) in its cluster.
pub(crate) fn cluster_ids(uf: &mut UnionFind, ids: &[String]) -> Vec<u32> {
    let n = ids.len();
    let mut best: Vec<u32> = (0..n as u32).collect(); // per root: index of the smallest id
    for i in 0..n as u32 {
        let root = uf.find(i) as usize;
        if ids[i as usize] < ids[best[root] as usize] {
            best[root] = i;
        }
    }
    (0..n as u32)
        .map(|i| {
            let root = uf.find(i) as usize;
            best[root]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_refuses_oversized_merges() {
        let mut uf = UnionFind::new(5);
        assert!(uf.union_capped(0, 1, Some(3)));
        assert!(uf.union_capped(1, 2, Some(3)));
        assert!(!uf.union_capped(2, 3, Some(3)));
        assert!(uf.union_capped(3, 4, Some(3)));
        assert_eq!(uf.find(0), uf.find(2));
        assert_ne!(uf.find(0), uf.find(3));
        let ids: Vec<String> = ["e", "d", "c", "b", "a"].map(String::from).to_vec();
        assert_eq!(cluster_ids(&mut uf, &ids), vec![2, 2, 2, 4, 4]);
    }
}
